/* irq.c: the IDT, handler registration and hv_dispatch (called by the stubs in irq_stubs.S). */
#include "hvdk.h"

struct idt_gate {
    uint16_t offset_low;
    uint16_t selector;
    uint8_t ist;
    uint8_t type_attr;
    uint16_t offset_mid;
    uint32_t offset_high;
    uint32_t zero;
} __attribute__((packed));

struct idt_pointer {
    uint16_t limit;
    uint64_t base;
} __attribute__((packed));

#define GDT_CODE_SELECTOR 0x08
#define GATE_INTERRUPT_PRESENT 0x8E /* P=1, DPL=0, type 0xE (64-bit interrupt gate) */

extern const uint64_t hv_isr_table[256];

static struct idt_gate hv_idt[256] __attribute__((aligned(16)));
static volatile uint32_t idt_state; /* 0 unbuilt, 1 building, 2 ready */
static hv_irq_handler handlers[256];
static uint8_t handler_flags[256];

volatile unsigned long hv_irq_counts[256];
volatile unsigned long hv_irq_spurious;

static const char *const exception_names[32] = {
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "CSO", "#TS",
    "#NP", "#SS", "#GP", "#PF", "#15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP",
    "#22", "#23", "#24", "#25", "#26", "#27", "#HV", "#VC", "#SX", "#31",
};

static void idt_build(void)
{
    for (unsigned v = 0; v < 256; v++) {
        uint64_t addr = hv_isr_table[v];
        hv_idt[v].offset_low = (uint16_t)addr;
        hv_idt[v].selector = GDT_CODE_SELECTOR;
        hv_idt[v].ist = 0;
        hv_idt[v].type_attr = GATE_INTERRUPT_PRESENT;
        hv_idt[v].offset_mid = (uint16_t)(addr >> 16);
        hv_idt[v].offset_high = (uint32_t)(addr >> 32);
        hv_idt[v].zero = 0;
    }
}

void hv_irq_init(void)
{
    uint32_t expected = 0;
    if (__atomic_compare_exchange_n(&idt_state, &expected, 1, 0, __ATOMIC_ACQUIRE,
                                    __ATOMIC_RELAXED)) {
        idt_build();
        __atomic_store_n(&idt_state, 2, __ATOMIC_RELEASE);
    } else {
        while (__atomic_load_n(&idt_state, __ATOMIC_ACQUIRE) != 2)
            hv_cpu_relax();
    }
    struct idt_pointer idtr = {.limit = sizeof(hv_idt) - 1, .base = (uint64_t)hv_idt};
    __asm__ volatile("lidt %0" ::"m"(idtr) : "memory");
}

long hv_irq_register_flags(unsigned vector, hv_irq_handler handler, unsigned flags)
{
    if (vector > 255)
        return HV_EINVAL;
    handler_flags[vector] = (uint8_t)flags;
    __atomic_store_n(&handlers[vector], handler, __ATOMIC_RELEASE);
    if (vector < HV_FIRST_VECTOR)
        return 0;
    return hv_irq_enable(vector);
}

long hv_irq_register(unsigned vector, hv_irq_handler handler)
{
    return hv_irq_register_flags(vector, handler, 0);
}

long hv_irq_unregister(unsigned vector)
{
    if (vector > 255)
        return HV_EINVAL;
    long ret = vector < HV_FIRST_VECTOR ? 0 : hv_irq_disable(vector);
    __atomic_store_n(&handlers[vector], (hv_irq_handler)0, __ATOMIC_RELEASE);
    handler_flags[vector] = 0;
    return ret;
}

/* Reports an unhandled exception without taking the console lock (the fault may have happened
 * while it was held), then ends the partition with 128 + vector. */
static __attribute__((noreturn)) void unhandled_exception(unsigned vector,
                                                          const struct hv_irq_frame *f)
{
    char line[HV_CONSOLE_LINE];
    int n = hv_snprintf(line, sizeof(line),
                        "exception %u (%s) on vcpu %ld: error 0x%lx rip 0x%lx rsp 0x%lx cr2 0x%lx\n",
                        vector, exception_names[vector], hv_partition_info(HV_INFO_VCPU_INDEX),
                        f->error_code, f->rip, f->rsp, hv_read_cr2());
    if (n > (int)sizeof(line) - 1)
        n = (int)sizeof(line) - 1;
    hv_console_write(line, (size_t)n);
    hv_exit(128 + (long)vector);
}

void hv_dispatch(uint64_t vector, struct hv_irq_frame *frame)
{
    unsigned v = (unsigned)vector & 0xff;
    hv_irq_handler handler = __atomic_load_n(&handlers[v], __ATOMIC_ACQUIRE);

    __atomic_fetch_add(&hv_irq_counts[v], 1, __ATOMIC_RELAXED);
    if (v < HV_FIRST_VECTOR) {
        if (!handler)
            unhandled_exception(v, frame);
        handler(v, frame);
        return;
    }
    if (handler)
        handler(v, frame);
    else
        __atomic_fetch_add(&hv_irq_spurious, 1, __ATOMIC_RELAXED);
    if (!handler || !(handler_flags[v] & HV_IRQF_MANUAL_EOI))
        hv_irq_eoi();
}
