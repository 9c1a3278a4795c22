/* control: demo guest, 1 vCPU. Runs a 1 kHz periodic timer on DEMO_TIMER_VECTOR and, once per
 * second of uptime (every 1000 ticks), prints the uptime and sends a struct demo_telemetry
 * message over the channel named "telemetry" to the telemetry partition.
 *
 * Output (one line each):
 *   control: partition <id>, <n> vCPU, <m> MiB, channel telemetry      (or "no channel telemetry")
 *   control: uptime <s> s, <s*1000> ticks                               every second
 *   control: sent telemetry #<seq>                                      after each send
 *   control: telemetry #<seq> not sent (error <e>), <k> failures       if HV_IPC_SEND fails
 */
#include "hvdk.h"
#include "demo.h"

volatile unsigned long control_ticks;
unsigned long control_send_failures;
uint32_t control_seq;

static void on_tick(unsigned vector, struct hv_irq_frame *frame)
{
    (void)vector;
    (void)frame;
    control_ticks++;
}

static void send_telemetry(const struct hv_ipc_info *ch, unsigned long second)
{
    struct demo_telemetry msg = {
        .seq = ++control_seq,
        .version = DEMO_TELEMETRY_VERSION,
        .ticks = second * DEMO_TICKS_PER_S,
        .uptime_s = second,
        .send_failures = control_send_failures,
        .time_ns = hv_time_ns(),
    };
    long ret = hv_ipc_send_to(ch, &msg, sizeof(msg));
    if (ret == 0) {
        hv_printf("control: sent telemetry #%u\n", msg.seq);
    } else {
        control_send_failures++;
        hv_printf("control: telemetry #%u not sent (error %ld), %lu failures\n", msg.seq, ret,
                  control_send_failures);
    }
}

/* The sensor driver (kept below the telemetry code, whose line numbers tests/gdb.rs uses).
 *
 * With the para-virtual device "sensor" in the boot info (see sensor.h; served by sensor-model),
 * control also drives it: at boot it reads ID, and every second, after the telemetry send, it
 * starts a conversion (CTRL = 1); on the device interrupt it reads STATUS and DATA and checks the
 * sample against the mailbox the model writes at SENSOR_MAILBOX_ADDR. Extra output lines:
 *   control: sensor id 0x<id>                     at boot, after the partition line (or
 *                                                 "control: no sensor", then nothing more about it)
 *   control: sensor sample #<k> = <v>             per sample read (k counts samples read)
 *   control: sensor bus error                     a read returned all ones (model late or dead)
 *   control: sensor not ready (status 0x<s>)      interrupt without STATUS.ready
 *   control: sensor mailbox mismatch              the mailbox value differs from DATA
 * control_sensor_base is 0 when the partition has no sensor.
 */
#include "sensor.h"

uint64_t control_sensor_base;
unsigned control_sensor_vector;          /* its interrupt vector, 0 if none */
volatile uint32_t control_sensor_irq;    /* set by the interrupt handler */
unsigned long control_sensor_samples;    /* samples read */
unsigned long control_sensor_bus_errors; /* reads that returned all ones */

static void on_sensor_irq(unsigned vector, struct hv_irq_frame *frame)
{
    (void)vector;
    (void)frame;
    control_sensor_irq = 1;
}

static uint32_t sensor_read(uint64_t reg) { return sensor_mmio_read32(control_sensor_base + reg); }

static void sensor_write(uint64_t reg, uint32_t value)
{
    sensor_mmio_write32(control_sensor_base + reg, value);
}

static void sensor_bus_error(void)
{
    control_sensor_bus_errors++;
    hv_printf("control: sensor bus error\n");
}

static const struct hv_device_info *find_client_device(const struct hv_boot_info *boot,
                                                       const char *name)
{
    unsigned count = boot->device_count < HV_MAX_DEVICES ? boot->device_count : HV_MAX_DEVICES;
    for (unsigned i = 0; i < count; i++) {
        const struct hv_device_info *d = &boot->devices[i];
        if (!d->is_model && strncmp(d->name, name, HV_NAME_LEN) == 0)
            return d;
    }
    return NULL;
}

/* At boot: finds the sensor, registers its interrupt and reads ID. */
static void sensor_init(const struct hv_boot_info *boot)
{
    const struct hv_device_info *dev = find_client_device(boot, SENSOR_DEVICE);
    if (!dev || dev->mmio_base == 0 || dev->mmio_size < SENSOR_MMIO_MIN) {
        hv_printf("control: no sensor\n");
        return;
    }
    control_sensor_base = dev->mmio_base;
    if (dev->vector >= HV_FIRST_VECTOR && dev->vector <= 255 &&
        hv_irq_register(dev->vector, on_sensor_irq) == 0)
        control_sensor_vector = dev->vector;

    uint32_t id = sensor_read(SENSOR_REG_ID);
    if (id == SENSOR_BUS_ERROR)
        sensor_bus_error();
    else
        hv_printf("control: sensor id 0x%08x\n", id);
}

/* Starts one conversion. The model has finished it (and raised the interrupt) by the time the
 * write completes; without an interrupt vector, act as if it had arrived. */
static void sensor_start(void)
{
    sensor_write(SENSOR_REG_CTRL, SENSOR_CTRL_START);
    /* A write cannot fail visibly; reading CTRL back shows a dead or late model as a bus error. */
    if (sensor_read(SENSOR_REG_CTRL) == SENSOR_BUS_ERROR) {
        sensor_bus_error();
        return;
    }
    if (!control_sensor_vector)
        control_sensor_irq = 1;
}

/* If the sensor interrupted: reads STATUS, then DATA, and checks DATA against the mailbox. */
static void sensor_poll(void)
{
    if (!__atomic_exchange_n(&control_sensor_irq, 0, __ATOMIC_ACQ_REL))
        return;
    uint32_t status = sensor_read(SENSOR_REG_STATUS);
    if (status == SENSOR_BUS_ERROR) {
        sensor_bus_error();
        return;
    }
    if (!(status & SENSOR_STATUS_READY)) {
        hv_printf("control: sensor not ready (status 0x%x)\n", status);
        return;
    }
    uint32_t data = sensor_read(SENSOR_REG_DATA);
    if (data == SENSOR_BUS_ERROR) {
        sensor_bus_error();
        return;
    }
    control_sensor_samples++;
    hv_printf("control: sensor sample #%lu = %u\n", control_sensor_samples, data);

    const volatile struct sensor_mailbox *mailbox =
        (const volatile struct sensor_mailbox *)SENSOR_MAILBOX_ADDR;
    if (mailbox->value != data)
        hv_printf("control: sensor mailbox mismatch\n");
}

void hv_main(const struct hv_boot_info *boot, unsigned vcpu)
{
    if (vcpu != 0)
        hv_park();

    const struct hv_ipc_info *ch = hv_ipc_find(boot, DEMO_TELEMETRY_CHANNEL);
    hv_printf("control: partition %u, %u vCPU, %lu MiB, %s " DEMO_TELEMETRY_CHANNEL "\n",
              boot->partition_id, boot->vcpu_count, (unsigned long)(boot->memory_size >> 20),
              ch ? "channel" : "no channel");
    sensor_init(boot);

    hv_irq_register(DEMO_TIMER_VECTOR, on_tick);
    hv_timer_periodic(DEMO_TIMER_VECTOR, DEMO_TICK_NS);

    unsigned long reported = 0; /* seconds already reported */
    for (;;) {
        hv_wait_for_interrupt();
        while (control_ticks / DEMO_TICKS_PER_S > reported) {
            reported++;
            hv_printf("control: uptime %lu s, %lu ticks\n", reported, reported * DEMO_TICKS_PER_S);
            if (ch)
                send_telemetry(ch, reported);
            if (control_sensor_base) {
                sensor_start();
                sensor_poll();
            }
        }
        if (control_sensor_base)
            sensor_poll();
    }
}
