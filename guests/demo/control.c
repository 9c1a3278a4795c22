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

void hv_main(const struct hv_boot_info *boot, unsigned vcpu)
{
    if (vcpu != 0)
        hv_park();

    const struct hv_ipc_info *ch = hv_ipc_find(boot, DEMO_TELEMETRY_CHANNEL);
    hv_printf("control: partition %u, %u vCPU, %lu MiB, %s " DEMO_TELEMETRY_CHANNEL "\n",
              boot->partition_id, boot->vcpu_count, (unsigned long)(boot->memory_size >> 20),
              ch ? "channel" : "no channel");

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
        }
    }
}
