/* sensor-model: demo device-model partition, 1 vCPU. Serves the para-virtual "sensor" device
 * (registers and behaviour in sensor.h) with the SDK's devmodel framework: a register table and
 * hv_dm_serve, which answers each client access and waits for the next one in a single
 * HV_DM_REPLY_WAIT.
 *
 * Output (one line each):
 *   sensor-model: partition <id>, serving sensor
 *   sensor-model: grant check passed (a copy outside the grant is refused)
 *                                      (or "grant check FAILED: ... was not refused")
 *   sensor-model: sample #<n> = <v>                                per conversion (CTRL write)
 *   sensor-model: mailbox copy failed (error <e>)                  if HV_DM_COPY_TO fails
 *   sensor-model: no device sensor                                 (then it exits with 1)
 *   sensor-model: serve failed (error <e>)                         (then it exits with 2)
 *
 * Debugging: break on sensor_write_ctrl (the CTRL write handler) and `next` through a conversion;
 * `print req->offset`, `print value`, `print *s`. sensor_state is the device state.
 */
#include "hvdk.h"
#include "sensor.h"

/* Client address used for the grant check at startup: the client's image base, outside the
 * device's grant. */
#define SENSOR_PROBE_ADDR HV_IMAGE_BASE
/* Bytes copied by the probe: the first instructions of _start (crt0.S: xor %ebp,%ebp;
 * mov %rdi,%r12; mov %rsi,%r13 = 8 bytes), the same in every image, so even a hypervisor that
 * wrongly allowed the copy would leave the client's memory unchanged. */
#define SENSOR_PROBE_LEN 8

/* The device's state (the handlers' ctx). */
struct sensor_state {
    struct hv_dm_device *dev;
    uint32_t status;       /* STATUS */
    uint32_t data;         /* DATA: the current sample */
    uint32_t ctrl;         /* the last value written to CTRL */
    uint32_t samples;      /* conversions done (= number of the current sample) */
    uint64_t last_request; /* id of the request that started the last conversion */
    unsigned long copy_failures;
};

struct sensor_state sensor_state;

static uint64_t sensor_read_status(void *ctx, const struct hv_dm_reg *reg,
                                   const struct hv_dm_request *req)
{
    struct sensor_state *s = ctx;
    (void)reg;
    (void)req;
    return s->status;
}

static uint64_t sensor_read_data(void *ctx, const struct hv_dm_reg *reg,
                                 const struct hv_dm_request *req)
{
    struct sensor_state *s = ctx;
    (void)reg;
    (void)req;
    uint32_t sample = s->data;
    s->status &= ~SENSOR_STATUS_READY;
    hv_dm_irq(s->dev, 0); /* the condition is gone: withdraw the interrupt if not yet taken */
    return sample;
}

static uint64_t sensor_read_ctrl(void *ctx, const struct hv_dm_reg *reg,
                                 const struct hv_dm_request *req)
{
    struct sensor_state *s = ctx;
    (void)reg;
    (void)req;
    return s->ctrl;
}

/* CTRL write: writing SENSOR_CTRL_START runs one conversion. */
void sensor_write_ctrl(void *ctx, const struct hv_dm_reg *reg, const struct hv_dm_request *req,
                       uint64_t value)
{
    struct sensor_state *s = ctx;
    (void)reg;
    if (value & SENSOR_CTRL_START) {
        uint32_t n = s->samples + 1;
        uint32_t sample = sensor_sample(n);
        s->samples = n;
        s->data = sample;
        s->status |= SENSOR_STATUS_READY;

        struct sensor_mailbox mailbox = {.seq = n, .value = sample};
        long ret = hv_dm_copy_to(s->dev->info->device, SENSOR_MAILBOX_ADDR, &mailbox,
                                 sizeof(mailbox));
        if (ret < 0) {
            s->copy_failures++;
            hv_printf("sensor-model: mailbox copy failed (error %ld)\n", ret);
        }
        hv_printf("sensor-model: sample #%u = %u\n", n, sample);
        hv_dm_irq(s->dev, 1);
        s->last_request = req->id;
    }
    s->ctrl = (uint32_t)value;
}

static const struct hv_dm_reg sensor_regs[] = {
    {SENSOR_REG_ID, "ID", hv_dm_read_const, NULL, SENSOR_ID},
    {SENSOR_REG_STATUS, "STATUS", sensor_read_status, NULL, 0},
    {SENSOR_REG_DATA, "DATA", sensor_read_data, NULL, 0},
    {SENSOR_REG_CTRL, "CTRL", sensor_read_ctrl, sensor_write_ctrl, 0},
    {0, NULL, NULL, NULL, 0},
};

struct hv_dm_device sensor_device = {
    .name = SENSOR_DEVICE,
    .regs = sensor_regs,
    .ctx = &sensor_state,
};

/* Once at startup: a copy outside the grant must be refused with HV_EPERM (a self-check of the
 * hypervisor's grant enforcement, not an error of the demo). */
static void probe_grant(void)
{
    long ret = hv_dm_copy_to(sensor_device.info->device, SENSOR_PROBE_ADDR,
                             (const void *)HV_IMAGE_BASE, SENSOR_PROBE_LEN);
    if (ret == HV_EPERM)
        hv_printf("sensor-model: grant check passed (a copy outside the grant is refused)\n");
    else
        hv_printf("sensor-model: grant check FAILED: a copy outside the grant was not refused "
                  "(result %ld)\n",
                  ret);
}

void hv_main(const struct hv_boot_info *boot, unsigned vcpu)
{
    if (vcpu != 0)
        hv_park();

    sensor_state.dev = &sensor_device;
    if (hv_dm_attach(&sensor_device) < 0) {
        hv_printf("sensor-model: no device " SENSOR_DEVICE "\n");
        hv_exit(1);
    }
    hv_printf("sensor-model: partition %u, serving " SENSOR_DEVICE "\n", boot->partition_id);
    probe_grant();

    long ret = hv_dm_serve(&sensor_device); /* returns only on an error */
    hv_printf("sensor-model: serve failed (error %ld)\n", ret);
    hv_exit(2);
}
