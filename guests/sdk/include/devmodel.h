/* devmodel.h: a small framework for device-model partitions.
 *
 * A device model serves the MMIO window of a para-virtual device used by a client partition:
 * each client access becomes a request (HV_DM_RECEIVE) that the model answers (HV_DM_REPLY).
 * Describe the device's registers in a table and let hv_dm_serve run the request loop:
 *
 *     static uint64_t rd_temp(void *ctx, const struct hv_dm_reg *reg,
 *                             const struct hv_dm_request *req) { ... }
 *     static const struct hv_dm_reg regs[] = {
 *         { 0x00, "ID", hv_dm_read_const, NULL, 0x53454e53 },
 *         { 0x08, "TEMP", rd_temp, NULL, 0 },
 *         { 0, NULL, NULL, NULL, 0 },                       // terminator
 *     };
 *     static struct hv_dm_device sensor = { .name = "sensor", .regs = regs };
 *     hv_dm_serve(&sensor);                                 // does not return on success
 *
 * Registers match on the exact offset of the access. Reads of a register without a read handler
 * return 0, writes without a write handler are ignored; accesses to offsets that are in no table
 * entry are answered with value 0 and status HV_EINVAL (a bus error for the client, logged and
 * traced by the hypervisor as a bad reply). Read results are truncated to the access
 * size. Set `verbose` to print every access.
 */
#ifndef HV_DEVMODEL_H
#define HV_DEVMODEL_H

#include <stdint.h>

#include "hv.h"

struct hv_dm_reg;

typedef uint64_t (*hv_dm_read_fn)(void *ctx, const struct hv_dm_reg *reg,
                                  const struct hv_dm_request *req);
typedef void (*hv_dm_write_fn)(void *ctx, const struct hv_dm_reg *reg,
                               const struct hv_dm_request *req, uint64_t value);

struct hv_dm_reg {
    uint64_t offset;
    const char *name; /* NULL ends the table */
    hv_dm_read_fn read;
    hv_dm_write_fn write;
    uint64_t arg; /* free for the handlers (e.g. the constant for hv_dm_read_const) */
};

struct hv_dm_device {
    const char *name;             /* matched against the boot info's devices with is_model */
    const struct hv_dm_reg *regs; /* terminated by an entry with name == NULL */
    void *ctx;                    /* passed to the handlers */
    int verbose;
    /* filled in by hv_dm_attach */
    const struct hv_device_info *info;
    unsigned long requests;
};

/* Finds the device in the boot info (dev->info). 0 or HV_ENOENT. A model with its own request
 * loop that wants the request doorbell registers a handler for dev->info->vector itself. */
long hv_dm_attach(struct hv_dm_device *dev);
/* Answers one request (HV_DM_REPLY); used by hv_dm_poll. */
void hv_dm_handle(struct hv_dm_device *dev, const struct hv_dm_request *req);
/* Answers every pending request; returns how many were answered (or a negative error). */
long hv_dm_poll(struct hv_dm_device *dev);
/* Attaches, then answers requests forever with HV_DM_REPLY_WAIT: one hypercall per request (the
 * answer to one and the wait for the next), no doorbell interrupt; other interrupts are taken
 * between requests. Returns only on an error. */
long hv_dm_serve(struct hv_dm_device *dev);
/* Raises (1) or lowers (0) the device's interrupt in the client: a lower withdraws a raise the
 * client has not taken yet (see hv_dm_set_irq in hv.h for the edge semantics). */
static inline long hv_dm_irq(const struct hv_dm_device *dev, unsigned level)
{
    return hv_dm_set_irq(dev->info->device, level);
}

/* A read handler that returns the register's `arg`. */
uint64_t hv_dm_read_const(void *ctx, const struct hv_dm_reg *reg, const struct hv_dm_request *req);

#endif
