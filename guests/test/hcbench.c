/* hcbench: test guest for the hypercall benchmark, 1 vCPU. After printing "hcbench: ready" it
 * calls HV_PARTITION_INFO(HV_INFO_VCPU_INDEX) in a loop forever (hc_loop), and every 2^20
 * iterations (starting with iteration 0) emits HV_TRACE_MARKER(1, <iteration>), so the host
 * can count iterations from the trace.
 *
 * Output:
 *   hcbench: ready
 */
#include "hvdk.h"

#define HCBENCH_MARKER_ID 1
#define HCBENCH_MARKER_EVERY (1ul << 20)

volatile unsigned long hcbench_iterations;

HV_NOINLINE void hc_loop(void)
{
    for (unsigned long i = 0;; i++) {
        if ((i & (HCBENCH_MARKER_EVERY - 1)) == 0) {
            hcbench_iterations = i;
            hv_trace_marker(HCBENCH_MARKER_ID, i);
        }
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
