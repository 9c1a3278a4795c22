/* ipc.h: inter-partition channels. Each channel listed in the boot info has a number (for the
 * HV_IPC_* calls), a name from the system description, a doorbell vector raised in this
 * partition when the peer sends or notifies, and a shared memory window.
 */
#ifndef HV_IPC_H
#define HV_IPC_H

#include <stddef.h>

#include "hv.h"

/* The channel named `name` in the boot info, or NULL. */
const struct hv_ipc_info *hv_ipc_find(const struct hv_boot_info *boot, const char *name);

static inline long hv_ipc_send_to(const struct hv_ipc_info *ch, const void *buf, size_t len)
{
    return hv_ipc_send(ch->channel, buf, len);
}

static inline long hv_ipc_receive_from(const struct hv_ipc_info *ch, void *buf, size_t max_len)
{
    return hv_ipc_receive(ch->channel, buf, max_len);
}

static inline long hv_ipc_notify_peer(const struct hv_ipc_info *ch)
{
    return hv_ipc_notify(ch->channel);
}

/* Sends, retrying with HV_YIELD while the peer's queue is full, at most `tries` times.
 * Returns the last result of HV_IPC_SEND. */
long hv_ipc_send_retry(const struct hv_ipc_info *ch, const void *buf, size_t len, unsigned tries);

#endif
