/* telemetry: demo guest, 1 vCPU. Receives the struct demo_telemetry messages that control sends
 * over the channel named "telemetry": sleeps in hlt, and on each doorbell interrupt drains the
 * queue with HV_IPC_RECEIVE.
 *
 * Output (one line each):
 *   telemetry: partition <id>, listening on channel telemetry (doorbell <v>)
 *   telemetry: no channel telemetry                                     (then it exits with 1)
 *   telemetry: #<seq> ticks=<ticks> uptime=<s> s                        per message
 *   telemetry: summary: <n> messages, last #<seq>, <g> missing          every 5 messages
 *   telemetry: bad message (<len> bytes)                                wrong size or version
 */
#include "hvdk.h"
#include "demo.h"

volatile unsigned long telemetry_doorbells;
unsigned long telemetry_received;
unsigned long telemetry_missing;
uint32_t telemetry_last_seq;

static void on_doorbell(unsigned vector, struct hv_irq_frame *frame)
{
    (void)vector;
    (void)frame;
    telemetry_doorbells++;
}

static void handle(const struct demo_telemetry *msg)
{
    if (msg->seq > telemetry_last_seq + 1)
        telemetry_missing += msg->seq - telemetry_last_seq - 1;
    telemetry_last_seq = msg->seq;
    telemetry_received++;
    hv_printf("telemetry: #%u ticks=%lu uptime=%lu s\n", msg->seq, (unsigned long)msg->ticks,
              (unsigned long)msg->uptime_s);
    if (telemetry_received % 5 == 0)
        hv_printf("telemetry: summary: %lu messages, last #%u, %lu missing\n", telemetry_received,
                  telemetry_last_seq, telemetry_missing);
}

static void drain(const struct hv_ipc_info *ch)
{
    static union {
        struct demo_telemetry msg;
        uint8_t bytes[HV_IPC_MAX_MESSAGE];
    } buf;
    for (;;) {
        long len = hv_ipc_receive_from(ch, &buf, sizeof(buf));
        if (len < 0)
            return; /* HV_EAGAIN: empty */
        if (len != sizeof(buf.msg) || buf.msg.version != DEMO_TELEMETRY_VERSION)
            hv_printf("telemetry: bad message (%ld bytes)\n", len);
        else
            handle(&buf.msg);
    }
}

void hv_main(const struct hv_boot_info *boot, unsigned vcpu)
{
    if (vcpu != 0)
        hv_park();

    const struct hv_ipc_info *ch = hv_ipc_find(boot, DEMO_TELEMETRY_CHANNEL);
    if (!ch) {
        hv_printf("telemetry: no channel " DEMO_TELEMETRY_CHANNEL "\n");
        hv_exit(1);
    }
    hv_printf("telemetry: partition %u, listening on channel %s (doorbell %u)\n",
              boot->partition_id, ch->name, ch->doorbell);
    hv_irq_register(ch->doorbell, on_doorbell);

    for (;;) {
        unsigned long seen = telemetry_doorbells;
        drain(ch);
        hv_irq_disable_cpu();
        if (telemetry_doorbells == seen)
            hv_wait_for_interrupt(); /* sti; hlt: no doorbell can slip in between */
        else
            hv_irq_enable_cpu();
    }
}
