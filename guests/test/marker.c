/* marker: test guest for the trace benchmarks, 1 vCPU. Emits HV_TRACE_MARKER(7, <seq>) as fast
 * as it can, seq = 0, 1, 2, ..., and prints a line after every 1,000,000 markers.
 *
 * Output:
 *   marker: <n> markers                 n = 1000000, 2000000, ...
 */
#include "hvdk.h"

#define MARKER_ID 7
#define MARKER_REPORT_EVERY 1000000ul

volatile unsigned long marker_seq;

HV_NOINLINE void marker_loop(void)
{
    for (unsigned long seq = 0;; seq++) {
        hv_trace_marker(MARKER_ID, seq);
        marker_seq = seq;
        if ((seq + 1) % MARKER_REPORT_EVERY == 0)
            hv_printf("marker: %lu markers\n", seq + 1);
    }
}

void hv_main(const struct hv_boot_info *boot, unsigned vcpu)
{
    (void)boot;
    if (vcpu != 0)
        hv_park();
    marker_loop();
}
