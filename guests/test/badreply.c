/* badreply: test device model, 1 vCPU. Serves the device "sensor" (demo/sensor.h) with garbage:
 * reads of ID are answered correctly (SENSOR_ID); every other access is answered with status
 * BADREPLY_STATUS, which is no HV_E* code, so the client's access must end as a bus error (reads
 * return all ones) that the hypervisor logs and traces as a bad reply. Before serving it also
 * replies to a request id that nobody waits for, which the hypervisor must refuse.
 *
 * It runs its own request loop (HV_DM_RECEIVE / HV_DM_REPLY, sleeping in hlt between doorbells)
 * instead of the SDK's devmodel framework, whose replies are always well formed.
 *
 * Output (one line each):
 *   badreply: partition <id>, serving sensor
 *   badreply: reply to an unknown id refused (error <e>)        (or "... NOT refused")
 *   badreply: <read|write> offset 0x<o>: status <s>            per access it garbles
 *   badreply: no device sensor                                  (then it exits with 1)
 */
#include "hvdk.h"
#include "../demo/sensor.h"

/* The status of every garbled reply. */
#define BADREPLY_STATUS 12345

static volatile unsigned long badreply_doorbells;

static void on_doorbell(unsigned vector, struct hv_irq_frame *frame)
{
    (void)vector;
    (void)frame;
    __atomic_fetch_add(&badreply_doorbells, 1, __ATOMIC_RELAXED);
}

static const struct hv_device_info *find_model_device(const struct hv_boot_info *boot)
{
    unsigned count = boot->device_count < HV_MAX_DEVICES ? boot->device_count : HV_MAX_DEVICES;
    for (unsigned i = 0; i < count; i++) {
        const struct hv_device_info *d = &boot->devices[i];
        if (d->is_model && strncmp(d->name, SENSOR_DEVICE, HV_NAME_LEN) == 0)
            return d;
    }
    return NULL;
}

static void answer(const struct hv_dm_request *req)
{
    if (!req->is_write && req->offset == SENSOR_REG_ID) {
        hv_dm_reply(req->id, SENSOR_ID, 0);
        return;
    }
    hv_printf("badreply: %s offset 0x%lx: status %d\n", req->is_write ? "write" : "read",
              (unsigned long)req->offset, BADREPLY_STATUS);
    hv_dm_reply(req->id, 0x5a5a5a5a, BADREPLY_STATUS);
}

void hv_main(const struct hv_boot_info *boot, unsigned vcpu)
{
    if (vcpu != 0)
        hv_park();
    const struct hv_device_info *dev = find_model_device(boot);
    if (!dev) {
        hv_printf("badreply: no device " SENSOR_DEVICE "\n");
        hv_exit(1);
    }
    hv_irq_register(dev->vector, on_doorbell);
    hv_printf("badreply: partition %u, serving " SENSOR_DEVICE "\n", boot->partition_id);

    /* Request ids carry the device number in their top bits and count from 1: this one is
     * never issued to a client that waits. */
    long ret = hv_dm_reply(0xdead0000beefull, 0, 0);
    if (ret < 0)
        hv_printf("badreply: reply to an unknown id refused (error %ld)\n", ret);
    else
        hv_printf("badreply: reply to an unknown id NOT refused\n");

    for (;;) {
        unsigned long seen = __atomic_load_n(&badreply_doorbells, __ATOMIC_RELAXED);
        struct hv_dm_request req;
        while (hv_dm_receive(&req) == 1)
            answer(&req);
        hv_irq_disable_cpu();
        if (__atomic_load_n(&badreply_doorbells, __ATOMIC_RELAXED) == seen)
            hv_wait_for_interrupt();
        else
            hv_irq_enable_cpu();
    }
}
