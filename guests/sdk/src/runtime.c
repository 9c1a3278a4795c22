/* runtime.c: per-vCPU start-up called by the boot stub (crt0.S) before hv_main. */
#include "hvdk.h"

const struct hv_boot_info *hv_boot;

int hv_boot_info_valid(const struct hv_boot_info *boot)
{
    return boot && boot->magic == HV_BOOT_MAGIC && boot->version == HV_BOOT_VERSION;
}

void hv_sdk_init(const struct hv_boot_info *boot, unsigned vcpu);

/* Runs on every vCPU at the same time: only idempotent work here. */
void hv_sdk_init(const struct hv_boot_info *boot, unsigned vcpu)
{
    (void)vcpu;
    __atomic_store_n(&hv_boot, boot, __ATOMIC_RELEASE);
    hv_irq_init();
}
