/* crasher: test guest, 1 vCPU. Triple-faults on purpose: loads an IDT with limit 0, then
 * executes ud2. #UD cannot be delivered (no IDT entry), nor the #GP and #DF that follow, so the
 * vCPU shuts down (KVM_EXIT_SHUTDOWN); the hypervisor must report it, not hang or crash.
 *
 * Output:
 *   crasher: about to crash
 *   crasher: still alive after ud2                       (only if the crash did not happen; exit 1)
 */
#include "hvdk.h"

struct idt_pointer {
    uint16_t limit;
    uint64_t base;
} __attribute__((packed));

static HV_NOINLINE void crash(void)
{
    static const struct idt_pointer empty = {.limit = 0, .base = 0};
    __asm__ volatile("lidt %0\n\tud2" ::"m"(empty) : "memory");
}

void hv_main(const struct hv_boot_info *boot, unsigned vcpu)
{
    (void)boot;
    if (vcpu != 0)
        hv_park();
    hv_printf("crasher: about to crash\n");
    crash();
    hv_printf("crasher: still alive after ud2\n");
    hv_exit(1);
}
