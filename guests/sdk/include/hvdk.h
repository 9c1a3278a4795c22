/* hvdk.h: the guest SDK in one include. A guest provides
 *
 *     void hv_main(const struct hv_boot_info *boot, unsigned vcpu);
 *
 * which the boot stub (crt0.S) calls on every vCPU, with the IDT already loaded and interrupts
 * still disabled. Returning from hv_main calls HV_EXIT(0), which ends the whole partition.
 */
#ifndef HVDK_H
#define HVDK_H

#include "hv_abi.h"
#include "hv.h"
#include "console.h"
#include "devmodel.h"
#include "hv_string.h"
#include "ipc.h"
#include "irq.h"
#include "spinlock.h"
#include "timer.h"
#include "uart.h"

/* The guest's entry point. */
void hv_main(const struct hv_boot_info *boot, unsigned vcpu);

/* The boot info (HV_BOOT_INFO_ADDR), set before hv_main runs. */
extern const struct hv_boot_info *hv_boot;

/* 1 if the boot info carries HV_BOOT_MAGIC and HV_BOOT_VERSION. */
int hv_boot_info_valid(const struct hv_boot_info *boot);

#define HV_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define HV_NOINLINE __attribute__((noinline))
#define HV_USED __attribute__((used))

#endif
