/* hv_abi.h: the virtual board interface between an hvdk guest and the hypervisor.
 *
 * This header is the contract. hv-core's `hypercall` module carries the same table and a unit test
 * parses this file and checks that both agree, so they cannot drift.
 *
 * Calling convention: `out %eax, $HV_HYPERCALL_PORT` with the call number in eax and arguments in
 * rdi, rsi, rdx, r10; the result comes back in rax (negative values are HV_E* errors). Every
 * other register is preserved, and arguments a call does not take are ignored.
 * All buffer addresses are guest-physical (the boot page tables identity-map them).
 *
 * | nr | name                | arguments (rdi, rsi, rdx, r10)            | result                       |
 * |----|---------------------|-------------------------------------------|------------------------------|
 * |  0 | HV_PARTITION_INFO   | what (HV_INFO_*)                          | the value asked for          |
 * |  1 | HV_CONSOLE_WRITE    | buf, len                                  | bytes written                |
 * |  2 | HV_TIMER_SET        | vector, period_ns, mode (HV_TIMER_*)      | 0 (period 0 cancels)         |
 * |  3 | HV_IRQ_ENABLE       | vector                                    | 0                            |
 * |  4 | HV_IRQ_DISABLE      | vector                                    | 0                            |
 * |  5 | HV_IRQ_EOI          | -                                         | vector ended, or HV_EINVAL   |
 * |  6 | HV_IDLE             | -                                         | 0 once an interrupt is due   |
 * |  7 | HV_YIELD            | -                                         | 0                            |
 * |  8 | HV_SEND_IPI         | vcpu, vector                              | 0                            |
 * |  9 | HV_IPC_SEND         | channel, buf, len                         | 0, HV_EAGAIN when full       |
 * | 10 | HV_IPC_RECEIVE      | channel, buf, max_len                     | length, HV_EAGAIN when empty |
 * | 11 | HV_IPC_NOTIFY       | channel                                   | 0                            |
 * | 12 | HV_TRACE_MARKER     | id, value                                 | 0                            |
 * | 13 | HV_EXIT             | code                                      | does not return              |
 * | 14 | HV_TIME_NS          | -                                         | ns since partition start     |
 * | 16 | HV_DM_RECEIVE       | request buf (struct hv_dm_request)        | 1 request, 0 none            |
 * | 17 | HV_DM_REPLY         | request id, value, status                 | 0                            |
 * | 18 | HV_DM_SET_IRQ       | device, level (1 raise / 0 lower)         | 0                            |
 * | 19 | HV_DM_COPY_FROM     | device, client addr, buf, len             | 0 or HV_EPERM                |
 * | 20 | HV_DM_COPY_TO       | device, client addr, buf, len             | 0 or HV_EPERM                |
 * | 21 | HV_DM_REPLY_WAIT    | reply id (0: none), value, status, buf    | 1 request, 0 none            |
 */
#ifndef HV_ABI_H
#define HV_ABI_H

#define HV_HYPERCALL_PORT 0xE0
#define HV_UART_PORT 0x3F8

#define HV_PARTITION_INFO 0
#define HV_CONSOLE_WRITE 1
#define HV_TIMER_SET 2
#define HV_IRQ_ENABLE 3
#define HV_IRQ_DISABLE 4
#define HV_IRQ_EOI 5
#define HV_IDLE 6
#define HV_YIELD 7
#define HV_SEND_IPI 8
#define HV_IPC_SEND 9
#define HV_IPC_RECEIVE 10
#define HV_IPC_NOTIFY 11
#define HV_TRACE_MARKER 12
#define HV_EXIT 13
#define HV_TIME_NS 14
#define HV_DM_RECEIVE 16
#define HV_DM_REPLY 17
/* HV_DM_SET_IRQ levels: nonzero raises the device's client interrupt (its vector becomes
 * pending; raises coalesce while pending), 0 lowers it (withdraws a raise not injected yet; an
 * interrupt already delivered is unaffected). Edge semantics: nothing re-fires after an EOI. */
#define HV_DM_SET_IRQ 18
#define HV_DM_COPY_FROM 19
#define HV_DM_COPY_TO 20
#define HV_DM_REPLY_WAIT 21

/* HV_PARTITION_INFO selectors */
#define HV_INFO_PARTITION_ID 0
#define HV_INFO_VCPU_INDEX 1
#define HV_INFO_VCPU_COUNT 2
#define HV_INFO_MEMORY_SIZE 3

/* HV_TIMER_SET modes */
#define HV_TIMER_ONESHOT 0
#define HV_TIMER_PERIODIC 1

/* Errors (returned in rax as negative numbers) */
#define HV_EINVAL (-1) /* invalid argument (bad vector, selector, mode, size) */
#define HV_ENOSYS (-2) /* no such hypercall */
#define HV_EAGAIN (-3) /* try again: IPC queue full (send) or empty (receive) */
#define HV_EFAULT (-4) /* a buffer is not in guest memory */
#define HV_ENOENT (-5) /* no such channel, vCPU or device */
#define HV_EPERM (-6)  /* not permitted (device-model grants) */

/* Interrupt vectors: guests own vectors 32..255; the UART uses HV_UART_VECTOR. */
#define HV_FIRST_VECTOR 32
#define HV_UART_VECTOR 36

/* Largest message HV_IPC_SEND accepts; each direction of a channel queues up to HV_IPC_DEPTH. */
#define HV_IPC_MAX_MESSAGE 4096
#define HV_IPC_DEPTH 64

/* Guest-physical layout (hv-core's layout.rs holds the same numbers). */
#define HV_GDT_ADDR 0x1000
#define HV_BOOT_INFO_ADDR 0x2000
#define HV_PML4_ADDR 0x9000
#define HV_IMAGE_BASE 0x100000
#define HV_IPC_BASE 0x80000000
#define HV_VCPU_STACK_SIZE 0x10000

#define HV_BOOT_MAGIC 0x544F4F424B445648ULL /* "HVDKBOOT" */
#define HV_BOOT_VERSION 1
#define HV_MAX_IPC 8
#define HV_MAX_DEVICES 8
#define HV_NAME_LEN 32

#ifndef __ASSEMBLER__
#include <stdint.h>

/* One IPC channel as seen from this partition. */
struct hv_ipc_info {
    char name[HV_NAME_LEN];
    uint64_t shm_addr;   /* guest-physical base of the shared window */
    uint64_t shm_size;
    uint32_t channel;    /* the number to pass to HV_IPC_* */
    uint32_t doorbell;   /* vector raised in this partition when the peer sends or notifies */
    uint32_t endpoint;   /* 0 for the first endpoint listed in the system description, 1 for the second */
    uint32_t reserved;
};

/* One para-virtual device: in a client its MMIO window; in a device model, a device it serves. */
struct hv_device_info {
    char name[HV_NAME_LEN];
    uint64_t mmio_base;
    uint64_t mmio_size;
    uint32_t device;     /* the number to pass to HV_DM_* */
    uint32_t vector;     /* client: the device IRQ vector; model: the request doorbell vector */
    uint32_t is_model;   /* 1 when this partition serves the device */
    uint32_t reserved;
};

/* Written by the hypervisor at HV_BOOT_INFO_ADDR before the first instruction; rdi points here. */
struct hv_boot_info {
    uint64_t magic;
    uint32_t version;
    uint32_t partition_id;
    uint32_t vcpu_count;
    uint32_t ipc_count;
    uint64_t memory_size;
    char name[HV_NAME_LEN];
    uint32_t device_count;
    uint32_t reserved;
    struct hv_ipc_info ipc[HV_MAX_IPC];
    struct hv_device_info devices[HV_MAX_DEVICES];
};

/* A device-model request (HV_DM_RECEIVE fills it in). */
struct hv_dm_request {
    uint64_t id;         /* unique among all devices the model serves; pass it to HV_DM_REPLY */
    uint32_t device;
    uint32_t client_vcpu;
    uint64_t offset;     /* inside the device's MMIO window */
    uint64_t value;      /* data for a write */
    uint32_t size;       /* 1, 2, 4 or 8 */
    uint32_t is_write;
};
#endif

#endif
