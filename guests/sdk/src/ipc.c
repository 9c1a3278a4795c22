/* ipc.c: channel lookup in the boot info and a retrying send (see ipc.h). */
#include "hvdk.h"

const struct hv_ipc_info *hv_ipc_find(const struct hv_boot_info *boot, const char *name)
{
    if (!boot)
        return 0;
    unsigned count = boot->ipc_count < HV_MAX_IPC ? boot->ipc_count : HV_MAX_IPC;
    for (unsigned i = 0; i < count; i++) {
        if (strncmp(boot->ipc[i].name, name, HV_NAME_LEN) == 0)
            return &boot->ipc[i];
    }
    return 0;
}

long hv_ipc_send_retry(const struct hv_ipc_info *ch, const void *buf, size_t len, unsigned tries)
{
    long ret = HV_EAGAIN;
    for (unsigned i = 0; i < tries; i++) {
        ret = hv_ipc_send(ch->channel, buf, len);
        if (ret != HV_EAGAIN)
            break;
        hv_yield();
    }
    return ret;
}
