/* hcbench: test guest for the hypercall benchmark, 1 vCPU. After printing "hcbench: ready" it
 * calls HV_PARTITION_INFO(HV_INFO_VCPU_INDEX) in a loop forever (hc_loop), and every 2^20
 * calls (starting with call 0) emits HV_TRACE_MARKER(1, <calls so far>), so the host can count
 * calls from the trace.
 *
 * Output:
 *   hcbench: ready
 */
#include "hvdk.h"

#define HCBENCH_MARKER_ID 1
#define HCBENCH_MARKER_EVERY (1ul << 20)
#define HCBENCH_UNROLL 8

volatile unsigned long hcbench_iterations;

/* Eight calls per turn, so that the loop's own bookkeeping (an add, a test, a branch) is spread
 * over eight round trips: on a host that emulates every guest instruction it would otherwise cost
 * as much as the hypercall itself. */
HV_NOINLINE void hc_loop(void)
{
    for (unsigned long i = 0;; i += HCBENCH_UNROLL) {
        if ((i & (HCBENCH_MARKER_EVERY - 1)) == 0) {
            hcbench_iterations = i;
            hv_trace_marker(HCBENCH_MARKER_ID, i);
        }
        /* HCBENCH_UNROLL calls, written out (the guests are built with -Og, which keeps loops) */
        hv_partition_info(HV_INFO_VCPU_INDEX);
        hv_partition_info(HV_INFO_VCPU_INDEX);
        hv_partition_info(HV_INFO_VCPU_INDEX);
        hv_partition_info(HV_INFO_VCPU_INDEX);
        hv_partition_info(HV_INFO_VCPU_INDEX);
        hv_partition_info(HV_INFO_VCPU_INDEX);
        hv_partition_info(HV_INFO_VCPU_INDEX);
        hv_partition_info(HV_INFO_VCPU_INDEX);
    }
}

void hv_main(const struct hv_boot_info *boot, unsigned vcpu)
{
    (void)boot;
    if (vcpu != 0)
        hv_park();
    hv_printf("hcbench: ready\n");
    hc_loop();
}
