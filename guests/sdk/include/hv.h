/* hv.h: raw hypercall wrappers, one static inline function per call in hv_abi.h.
 *
 * Convention (see hv_abi.h): `out %eax, $0xE0` with the call number in eax and the arguments in
 * rdi, rsi, rdx, r10; the result comes back in rax, negative values being HV_E* errors. The
 * hypervisor preserves every other register and ignores the arguments a call does not take, so
 * each wrapper loads only the registers its call reads and tells the compiler that they survive
 * (a loop keeps its constant arguments in registers). Every call is a compiler memory barrier
 * ("memory").
 */
#ifndef HV_H
#define HV_H

#include "hv_abi.h"

#include <stddef.h>
#include <stdint.h>

#define HV_STR_(x) #x
#define HV_STR(x) HV_STR_(x)

#define HV_HYPERCALL_INSN "out %%eax, $" HV_STR(HV_HYPERCALL_PORT)

static inline long hv_hypercall0(unsigned long nr)
{
    long ret;
    __asm__ volatile(HV_HYPERCALL_INSN : "=a"(ret) : "0"(nr) : "memory");
    return ret;
}
static inline long hv_hypercall1(unsigned long nr, unsigned long a0)
{
    long ret;
    __asm__ volatile(HV_HYPERCALL_INSN : "=a"(ret) : "0"(nr), "D"(a0) : "memory");
    return ret;
}
static inline long hv_hypercall2(unsigned long nr, unsigned long a0, unsigned long a1)
{
    long ret;
    __asm__ volatile(HV_HYPERCALL_INSN : "=a"(ret) : "0"(nr), "D"(a0), "S"(a1) : "memory");
    return ret;
}
static inline long hv_hypercall3(unsigned long nr, unsigned long a0, unsigned long a1,
                                 unsigned long a2)
{
    long ret;
    __asm__ volatile(HV_HYPERCALL_INSN
                     : "=a"(ret)
                     : "0"(nr), "D"(a0), "S"(a1), "d"(a2)
                     : "memory");
    return ret;
}
/* Generic hypercall with four arguments; the typed wrappers below are preferred. */
static inline long hv_hypercall(unsigned long nr, unsigned long a0, unsigned long a1,
                                unsigned long a2, unsigned long a3)
{
    long ret;
    register unsigned long r10 __asm__("r10") = a3;
    __asm__ volatile(HV_HYPERCALL_INSN
                     : "=a"(ret)
                     : "0"(nr), "D"(a0), "S"(a1), "d"(a2), "r"(r10)
                     : "memory");
    return ret;
}

/* 0: HV_PARTITION_INFO. what = HV_INFO_*. */
static inline long hv_partition_info(unsigned what)
{
    return hv_hypercall1(HV_PARTITION_INFO, what);
}

/* 1: HV_CONSOLE_WRITE. Returns the number of bytes written. Prefer hv_printf (console.h). */
static inline long hv_console_write(const void *buf, size_t len)
{
    return hv_hypercall2(HV_CONSOLE_WRITE, (unsigned long)buf, len);
}

/* 2: HV_TIMER_SET. Programs this vCPU's timer; period_ns 0 cancels. mode = HV_TIMER_*. */
static inline long hv_timer_set(unsigned vector, uint64_t period_ns, unsigned mode)
{
    return hv_hypercall3(HV_TIMER_SET, vector, period_ns, mode);
}

/* 3: HV_IRQ_ENABLE. Lets the hypervisor deliver `vector`. See also hv_irq_register (irq.h). */
static inline long hv_irq_enable(unsigned vector) { return hv_hypercall1(HV_IRQ_ENABLE, vector); }

/* 4: HV_IRQ_DISABLE. Interrupts for `vector` stay pending until it is enabled again. */
static inline long hv_irq_disable(unsigned vector)
{
    return hv_hypercall1(HV_IRQ_DISABLE, vector);
}

/* 5: HV_IRQ_EOI. Ends the interrupt in service; returns its vector, HV_EINVAL if none. */
static inline long hv_irq_eoi(void) { return hv_hypercall0(HV_IRQ_EOI); }

/* 6: HV_IDLE. Returns 0 once an interrupt is due. */
static inline long hv_idle(void) { return hv_hypercall0(HV_IDLE); }

/* 7: HV_YIELD. Gives up the rest of the time slice. */
static inline long hv_yield(void) { return hv_hypercall0(HV_YIELD); }

/* 8: HV_SEND_IPI. Raises `vector` on vCPU `vcpu` of this partition. */
static inline long hv_send_ipi(unsigned vcpu, unsigned vector)
{
    return hv_hypercall2(HV_SEND_IPI, vcpu, vector);
}

/* 9: HV_IPC_SEND. 0, or HV_EAGAIN when the peer's queue is full. */
static inline long hv_ipc_send(unsigned channel, const void *buf, size_t len)
{
    return hv_hypercall3(HV_IPC_SEND, channel, (unsigned long)buf, len);
}

/* 10: HV_IPC_RECEIVE. The message length, or HV_EAGAIN when the queue is empty. */
static inline long hv_ipc_receive(unsigned channel, void *buf, size_t max_len)
{
    return hv_hypercall3(HV_IPC_RECEIVE, channel, (unsigned long)buf, max_len);
}

/* 11: HV_IPC_NOTIFY. Rings the peer's doorbell without a message. */
static inline long hv_ipc_notify(unsigned channel) { return hv_hypercall1(HV_IPC_NOTIFY, channel); }

/* 12: HV_TRACE_MARKER. Records (id, value) in the hypervisor's trace. */
static inline long hv_trace_marker(uint64_t id, uint64_t value)
{
    return hv_hypercall2(HV_TRACE_MARKER, id, value);
}

/* 13: HV_EXIT. Ends the partition with `code`; does not return. */
static inline __attribute__((noreturn)) void hv_exit(long code)
{
    hv_hypercall1(HV_EXIT, (unsigned long)code);
    for (;;)
        __asm__ volatile("cli; hlt");
}

/* 14: HV_TIME_NS. Nanoseconds since the partition started. */
static inline uint64_t hv_time_ns(void) { return (uint64_t)hv_hypercall0(HV_TIME_NS); }

/* 16: HV_DM_RECEIVE. Fills *req; 1 when a request was taken, 0 when none is pending. */
static inline long hv_dm_receive(struct hv_dm_request *req)
{
    return hv_hypercall1(HV_DM_RECEIVE, (unsigned long)req);
}

/* 17: HV_DM_REPLY. Completes request `id` (value is the read result). Status 0 is success; any
 * other status makes the client's access a bus error (reads return all ones), which the
 * hypervisor logs as a warning and traces as a bad reply. HV_ENOENT when no client waits for
 * `id`. */
static inline long hv_dm_reply(uint64_t id, uint64_t value, long status)
{
    return hv_hypercall3(HV_DM_REPLY, id, value, (unsigned long)status);
}

/* 18: HV_DM_SET_IRQ. level 1 (any nonzero) raises the device's client interrupt, 0 lowers it;
 * HV_ENOENT for an unknown device or one without an interrupt. Device interrupts are edges with
 * a withdrawable pending state: a raise makes the client's vector pending (raises coalesce while
 * it is pending); a lower withdraws a raise the client has not taken yet (useful when the
 * condition went away, e.g. the data was read by polling) and does nothing to an interrupt
 * already delivered. A line left raised does not fire again after the client's EOI: raise again
 * for each new event. */
static inline long hv_dm_set_irq(unsigned device, unsigned level)
{
    return hv_hypercall2(HV_DM_SET_IRQ, device, level);
}

/* 19: HV_DM_COPY_FROM. Copies len bytes at client address `client` into buf. */
static inline long hv_dm_copy_from(unsigned device, uint64_t client, void *buf, size_t len)
{
    return hv_hypercall(HV_DM_COPY_FROM, device, client, (unsigned long)buf, len);
}

/* 20: HV_DM_COPY_TO. Copies len bytes from buf to client address `client`. */
static inline long hv_dm_copy_to(unsigned device, uint64_t client, const void *buf, size_t len)
{
    return hv_hypercall(HV_DM_COPY_TO, device, client, (unsigned long)buf, len);
}

/* 21: HV_DM_REPLY_WAIT. Answers request `id` as HV_DM_REPLY does (id 0: no answer), then takes
 * the next request into *req as HV_DM_RECEIVE does, waiting for one if none is pending: one
 * hypercall per request, and no doorbell interrupt. Returns 1 with a request, or 0 without one
 * when an interrupt is due or the hypervisor needs the vCPU (call again; make the call with
 * interrupts enabled so that a due interrupt is taken right after it). A failed answer returns
 * its error (HV_ENOENT) at once, without taking a request. */
static inline long hv_dm_reply_wait(uint64_t id, uint64_t value, long status,
                                    struct hv_dm_request *req)
{
    return hv_hypercall(HV_DM_REPLY_WAIT, id, value, (unsigned long)status, (unsigned long)req);
}

#endif
