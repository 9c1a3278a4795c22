/* spin: test guest for the gdb benchmarks, 1 vCPU. After printing "spin: ready" it spins in
 * spin_loop incrementing spin_counter forever (interrupts off, no exits), so a debugger can
 * measure stop/continue/step/memory-read latency. The image spans at least 64 KiB (spin_area),
 * so all of 0x100000..0x110000 is part of it.
 *
 * Output:
 *   spin: ready
 */
#include "hvdk.h"

volatile unsigned long spin_counter;

/* 64 KiB of .bss: makes the loaded image cover 0x100000..0x110000 and more. */
HV_USED volatile uint8_t spin_area[65536];

HV_NOINLINE void spin_loop(void)
{
    for (;;)
        spin_counter++;
}

void hv_main(const struct hv_boot_info *boot, unsigned vcpu)
{
    (void)boot;
    if (vcpu != 0)
        hv_park();
    hv_printf("spin: ready\n");
    spin_loop();
}
