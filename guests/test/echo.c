/* echo: test guest, 1 vCPU, the peer of `hypercalls`. Receives every message on the channel
 * named "loop" (or, if there is none, the first channel in the boot info) and sends it back
 * unchanged, retrying while the peer's queue is full. Sleeps in hlt between doorbells.
 *
 * Output (one line each):
 *   echo: partition <id>, echoing on channel <name> (doorbell <v>)
 *   echo: no channel                                           (then it exits with 1)
 *   echo: reply dropped (error <e>)                             if a send keeps failing
 */
#include "hvdk.h"

#define ECHO_CHANNEL "loop"

volatile unsigned long echo_doorbells;
unsigned long echo_messages;

static uint8_t echo_buf[HV_IPC_MAX_MESSAGE];

static void on_doorbell(unsigned vector, struct hv_irq_frame *frame)
{
    (void)vector;
    (void)frame;
    echo_doorbells++;
}

void hv_main(const struct hv_boot_info *boot, unsigned vcpu)
{
    if (vcpu != 0)
        hv_park();

    const struct hv_ipc_info *ch = hv_ipc_find(boot, ECHO_CHANNEL);
    if (!ch && boot->ipc_count > 0)
        ch = &boot->ipc[0];
    if (!ch) {
        hv_printf("echo: no channel\n");
        hv_exit(1);
    }
    hv_printf("echo: partition %u, echoing on channel %s (doorbell %u)\n", boot->partition_id,
              ch->name, ch->doorbell);
    hv_irq_register(ch->doorbell, on_doorbell);

    for (;;) {
        unsigned long seen = echo_doorbells;
        for (;;) {
            long len = hv_ipc_receive_from(ch, echo_buf, sizeof(echo_buf));
            if (len < 0)
                break;
            echo_messages++;
            long ret = hv_ipc_send_retry(ch, echo_buf, (size_t)len, 100000);
            if (ret != 0)
                hv_printf("echo: reply dropped (error %ld)\n", ret);
        }
        hv_irq_disable_cpu();
        if (echo_doorbells == seen)
            hv_wait_for_interrupt();
        else
            hv_irq_enable_cpu();
    }
}
