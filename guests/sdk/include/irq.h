/* irq.h: the guest's IDT and interrupt dispatch.
 *
 * The SDK builds one IDT with 256 assembly stubs (irq_stubs.S). Each stub saves all general
 * purpose registers (not SSE/x87 state: guests are built integer-only with -mgeneral-regs-only),
 * then calls hv_dispatch(vector, frame):
 *   - vectors 0..31 (exceptions): the registered handler if any, otherwise a report line
 *     "exception <v> (<name>) on vcpu <n>: error <e> rip <rip> rsp <rsp> cr2 <cr2>" followed
 *     by HV_EXIT(128 + vector);
 *   - vectors 32..255: the registered handler (if any), then HV_IRQ_EOI unless the vector was
 *     registered with HV_IRQF_MANUAL_EOI.
 * Handlers run with interrupts masked (interrupt gates) on the interrupted stack.
 *
 * The boot stub calls hv_irq_init() on every vCPU before hv_main, so the IDT is already loaded.
 * The handler table is shared by all vCPUs of the partition, but the hypervisor's interrupt
 * controller is per vCPU: HV_IRQ_ENABLE / HV_IRQ_DISABLE (and so hv_irq_register) act on the
 * calling vCPU only, timers raise their vector on the vCPU that set them, and IPC doorbells and
 * the UART interrupt go to vCPU 0.
 */
#ifndef HV_IRQ_H
#define HV_IRQ_H

#include <stdint.h>

#include "spinlock.h"

/* What the stubs push, lowest address first; `frame` points here. */
struct hv_irq_frame {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
    uint64_t rbp, rdi, rsi, rdx, rcx, rbx, rax;
    uint64_t vector;
    uint64_t error_code; /* 0 for vectors without an error code */
    /* pushed by the CPU */
    uint64_t rip, cs, rflags, rsp, ss;
};

typedef void (*hv_irq_handler)(unsigned vector, struct hv_irq_frame *frame);

/* hv_irq_register_flags flags */
#define HV_IRQF_MANUAL_EOI 1u /* the handler calls hv_irq_eoi() itself */

/* Builds the IDT (once per partition) and loads it on the calling vCPU. */
void hv_irq_init(void);

/* Installs `handler` for `vector`; for vectors >= 32 also calls HV_IRQ_ENABLE (for the calling
 * vCPU) and returns its result (0 on success). A NULL handler enables the vector with the
 * default action (count it in hv_irq_spurious, EOI). */
long hv_irq_register(unsigned vector, hv_irq_handler handler);
long hv_irq_register_flags(unsigned vector, hv_irq_handler handler, unsigned flags);
/* Removes the handler; for vectors >= 32 also calls HV_IRQ_DISABLE. */
long hv_irq_unregister(unsigned vector);

/* Interrupts taken on each vector since boot (all vCPUs), and those with no handler. */
extern volatile unsigned long hv_irq_counts[256];
extern volatile unsigned long hv_irq_spurious;

/* Called by the stubs. */
void hv_dispatch(uint64_t vector, struct hv_irq_frame *frame);

static inline void hv_irq_enable_cpu(void) { __asm__ volatile("sti" ::: "memory"); }
static inline void hv_irq_disable_cpu(void) { __asm__ volatile("cli" ::: "memory"); }

/* `sti; hlt`: sleeps until the next interrupt has been handled; returns with IF=1.
 * The interrupt shadow of sti makes "cli; check condition; hv_wait_for_interrupt()" race free. */
static inline void hv_wait_for_interrupt(void) { __asm__ volatile("sti; hlt" ::: "memory"); }

/* Stops the calling vCPU for good (used for vCPUs a guest does not need). */
static inline __attribute__((noreturn)) void hv_park(void)
{
    for (;;)
        __asm__ volatile("cli; hlt" ::: "memory");
}

static inline uint64_t hv_read_cr2(void)
{
    uint64_t v;
    __asm__ volatile("mov %%cr2, %0" : "=r"(v));
    return v;
}

#endif
