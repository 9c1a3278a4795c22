/* hypercalls: test guest, 1 vCPU. Exercises every hypercall except the HV_DM_* ones and prints
 * one line per check, then a verdict, and exits with 0 (all ok) or 1.
 *
 * Needs a channel named "loop" to a partition running the `echo` guest. Uses vectors 200..204
 * for its own timers and IPIs (the channel's doorbell must be another one).
 *
 * Output, in this order (each check prints "hypercalls: ok <NAME>" or
 * "hypercalls: FAIL <NAME> got <value>"):
 *   hypercalls: partition <id>, <n> vCPU, <m> MiB
 *   BOOT_INFO PARTITION_INFO_ID PARTITION_INFO_VCPU_INDEX PARTITION_INFO_VCPU_COUNT
 *   PARTITION_INFO_MEMORY_SIZE PARTITION_INFO_BAD
 *   hypercalls: console write          (the line written by the CONSOLE_WRITE check)
 *   CONSOLE_WRITE TIME_NS TIMER_SET TIMER_ONESHOT TIMER_ONESHOT_ONCE TIMER_PERIODIC TIMER_CANCEL
 *   TIMER_CANCELLED TIMER_BAD_VECTOR IRQ_DISABLE IRQ_ENABLE IRQ_BAD_VECTOR IRQ_EOI IRQ_EOI_NONE
 *   IDLE YIELD SEND_IPI SEND_IPI_BAD_VCPU TRACE_MARKER
 *   IPC_CHANNEL IPC_RECEIVE_EMPTY IPC_SEND_TOO_BIG IPC_SEND IPC_DOORBELL IPC_RECEIVE IPC_ECHO
 *   IPC_MAX_MESSAGE IPC_QUEUE IPC_NOTIFY IPC_BAD_CHANNEL IPC_BAD_BUFFER
 *   UNKNOWN_CALL BAD_BUFFER REGISTERS_PRESERVED
 *   hypercalls: all ok                 (or "hypercalls: <n> failed")
 * If the "loop" channel is missing, IPC_CHANNEL fails (got -5) and the other IPC checks are
 * skipped.
 */
#include "hvdk.h"

#define V_ONESHOT 200
#define V_PERIODIC 201
#define V_MASKED 202
#define V_EOI 203
#define V_IPI 204

#define LOOP_CHANNEL "loop"
#define BAD_ADDRESS 0xFFFFFFFF0000ull
#define WAIT_NS (2 * HV_NS_PER_S)

static unsigned failures;
volatile unsigned long hits[256];
volatile long eoi_result = 1;

static void check(const char *name, int ok, long got)
{
    if (ok) {
        hv_printf("hypercalls: ok %s\n", name);
    } else {
        failures++;
        hv_printf("hypercalls: FAIL %s got %ld\n", name, got);
    }
}

static void expect(const char *name, long got, long want) { check(name, got == want, got); }

static void count_handler(unsigned vector, struct hv_irq_frame *frame)
{
    (void)frame;
    hits[vector]++;
}

static void eoi_handler(unsigned vector, struct hv_irq_frame *frame)
{
    (void)frame;
    eoi_result = hv_irq_eoi();
    hits[vector]++;
}

/* Waits (interrupts enabled) until hits[vector] >= target; 1 if it got there in time. */
static int wait_hits(unsigned vector, unsigned long target, uint64_t timeout_ns)
{
    uint64_t end = hv_time_ns() + timeout_ns;
    while (hits[vector] < target) {
        if (hv_time_ns() > end)
            return 0;
        hv_cpu_relax();
    }
    return 1;
}

static void check_partition_info(const struct hv_boot_info *boot, unsigned vcpu)
{
    check("BOOT_INFO",
          hv_boot_info_valid(boot) && (uint64_t)boot == HV_BOOT_INFO_ADDR && boot->vcpu_count >= 1,
          (long)boot->version);
    expect("PARTITION_INFO_ID", hv_partition_info(HV_INFO_PARTITION_ID), boot->partition_id);
    expect("PARTITION_INFO_VCPU_INDEX", hv_partition_info(HV_INFO_VCPU_INDEX), vcpu);
    expect("PARTITION_INFO_VCPU_COUNT", hv_partition_info(HV_INFO_VCPU_COUNT), boot->vcpu_count);
    expect("PARTITION_INFO_MEMORY_SIZE", hv_partition_info(HV_INFO_MEMORY_SIZE),
           (long)boot->memory_size);
    expect("PARTITION_INFO_BAD", hv_partition_info(1000), HV_EINVAL);
}

static void check_console_and_time(void)
{
    static const char line[] = "hypercalls: console write\n";
    hv_console_flush();
    expect("CONSOLE_WRITE", hv_console_write(line, sizeof(line) - 1), (long)sizeof(line) - 1);

    uint64_t t0 = hv_time_ns();
    hv_delay_ns(HV_NS_PER_MS);
    uint64_t t1 = hv_time_ns();
    check("TIME_NS", t0 > 0 && t1 >= t0 + HV_NS_PER_MS, (long)(t1 - t0));
}

/* Returns 1 if the one-shot timer works (the IDLE check depends on it). */
static int check_timers(void)
{
    hv_irq_register(V_ONESHOT, count_handler);
    long ret = hv_timer_oneshot(V_ONESHOT, HV_NS_PER_MS);
    expect("TIMER_SET", ret, 0);
    int fired = wait_hits(V_ONESHOT, 1, WAIT_NS);
    check("TIMER_ONESHOT", fired, (long)hits[V_ONESHOT]);
    hv_delay_ns(20 * HV_NS_PER_MS);
    expect("TIMER_ONESHOT_ONCE", (long)hits[V_ONESHOT], 1);

    hv_irq_register(V_PERIODIC, count_handler);
    ret = hv_timer_periodic(V_PERIODIC, HV_NS_PER_MS);
    check("TIMER_PERIODIC", ret == 0 && wait_hits(V_PERIODIC, 10, WAIT_NS),
          ret ? ret : (long)hits[V_PERIODIC]);
    expect("TIMER_CANCEL", hv_timer_cancel(V_PERIODIC), 0);
    unsigned long at_cancel = hits[V_PERIODIC];
    hv_delay_ns(20 * HV_NS_PER_MS);
    unsigned long extra = hits[V_PERIODIC] - at_cancel;
    check("TIMER_CANCELLED", extra <= 1, (long)extra); /* one may have been pending already */

    expect("TIMER_BAD_VECTOR", hv_timer_oneshot(300, HV_NS_PER_MS), HV_EINVAL);
    return fired;
}

static void check_irqs(void)
{
    /* A disabled vector's interrupt is held until the vector is enabled again. */
    hv_irq_register(V_MASKED, count_handler);
    long ret = hv_irq_disable(V_MASKED);
    hv_timer_oneshot(V_MASKED, HV_NS_PER_MS);
    hv_delay_ns(20 * HV_NS_PER_MS);
    check("IRQ_DISABLE", ret == 0 && hits[V_MASKED] == 0, ret ? ret : (long)hits[V_MASKED]);
    ret = hv_irq_enable(V_MASKED);
    check("IRQ_ENABLE", ret == 0 && wait_hits(V_MASKED, 1, WAIT_NS),
          ret ? ret : (long)hits[V_MASKED]);
    expect("IRQ_BAD_VECTOR", hv_irq_enable(300), HV_EINVAL);

    /* HV_IRQ_EOI returns the vector it ended (the handler does the EOI itself here). */
    hv_irq_register_flags(V_EOI, eoi_handler, HV_IRQF_MANUAL_EOI);
    hv_send_ipi(0, V_EOI);
    wait_hits(V_EOI, 1, WAIT_NS);
    expect("IRQ_EOI", eoi_result, V_EOI);
    expect("IRQ_EOI_NONE", hv_irq_eoi(), HV_EINVAL);
}

static void check_idle_yield_ipi(const struct hv_boot_info *boot, int timer_works)
{
    if (timer_works) {
        /* With IF=0 the timer interrupt cannot sneak in before HV_IDLE (which would then wait
         * for an interrupt that never comes); HV_IDLE returns when it is due, and it is taken
         * once interrupts are enabled again. */
        unsigned long before = hits[V_ONESHOT];
        hv_irq_disable_cpu();
        hv_timer_oneshot(V_ONESHOT, 2 * HV_NS_PER_MS);
        long ret = hv_idle();
        hv_irq_enable_cpu();
        check("IDLE", ret == 0 && wait_hits(V_ONESHOT, before + 1, WAIT_NS),
              ret ? ret : (long)(hits[V_ONESHOT] - before));
    } else {
        failures++;
        hv_printf("hypercalls: FAIL IDLE got skipped (no timer)\n");
    }

    expect("YIELD", hv_yield(), 0);

    hv_irq_register(V_IPI, count_handler);
    long ret = hv_send_ipi(0, V_IPI);
    check("SEND_IPI", ret == 0 && wait_hits(V_IPI, 1, WAIT_NS), ret ? ret : (long)hits[V_IPI]);
    expect("SEND_IPI_BAD_VCPU", hv_send_ipi(boot->vcpu_count + 100, V_IPI), HV_ENOENT);

    expect("TRACE_MARKER", hv_trace_marker(0x4856, 42), 0);
}

static uint8_t ipc_out[HV_IPC_MAX_MESSAGE + 1];
static uint8_t ipc_in[HV_IPC_MAX_MESSAGE];

/* HV_IPC_RECEIVE, polling until a message arrives or the timeout passes. */
static long receive_wait(const struct hv_ipc_info *ch, void *buf, size_t max)
{
    uint64_t end = hv_time_ns() + WAIT_NS;
    for (;;) {
        long len = hv_ipc_receive_from(ch, buf, max);
        if (len != HV_EAGAIN || hv_time_ns() > end)
            return len;
        hv_cpu_relax();
    }
}

static void check_ipc(const struct hv_boot_info *boot)
{
    const struct hv_ipc_info *ch = hv_ipc_find(boot, LOOP_CHANNEL);
    check("IPC_CHANNEL", ch != 0, HV_ENOENT);
    if (!ch)
        return;
    hv_irq_register(ch->doorbell, count_handler);
    unsigned long doorbells = hits[ch->doorbell];

    expect("IPC_RECEIVE_EMPTY", hv_ipc_receive_from(ch, ipc_in, sizeof(ipc_in)), HV_EAGAIN);
    expect("IPC_SEND_TOO_BIG", hv_ipc_send_to(ch, ipc_out, HV_IPC_MAX_MESSAGE + 1), HV_EINVAL);

    static const char hello[] = "hello, echo!";
    expect("IPC_SEND", hv_ipc_send_to(ch, hello, sizeof(hello)), 0);
    check("IPC_DOORBELL", wait_hits(ch->doorbell, doorbells + 1, WAIT_NS),
          (long)(hits[ch->doorbell] - doorbells));
    long len = receive_wait(ch, ipc_in, sizeof(ipc_in));
    expect("IPC_RECEIVE", len, (long)sizeof(hello));
    check("IPC_ECHO", len == sizeof(hello) && memcmp(ipc_in, hello, sizeof(hello)) == 0, len);

    for (unsigned i = 0; i < HV_IPC_MAX_MESSAGE; i++)
        ipc_out[i] = (uint8_t)(i * 7 + 3);
    long ret = hv_ipc_send_to(ch, ipc_out, HV_IPC_MAX_MESSAGE);
    len = ret == 0 ? receive_wait(ch, ipc_in, sizeof(ipc_in)) : ret;
    check("IPC_MAX_MESSAGE",
          len == HV_IPC_MAX_MESSAGE && memcmp(ipc_in, ipc_out, HV_IPC_MAX_MESSAGE) == 0, len);

    /* several messages queued back to back come back complete and in order */
    long bad = 0;
    for (uint64_t i = 0; i < 8 && !bad; i++) {
        uint64_t msg = 0x51000 + i;
        ret = hv_ipc_send_to(ch, &msg, sizeof(msg));
        if (ret != 0)
            bad = ret;
    }
    for (uint64_t i = 0; i < 8 && !bad; i++) {
        uint64_t msg = 0;
        len = receive_wait(ch, &msg, sizeof(msg));
        if (len != sizeof(msg))
            bad = len < 0 ? len : 1000 + len;
        else if (msg != 0x51000 + i)
            bad = (long)msg;
    }
    check("IPC_QUEUE", bad == 0, bad);

    expect("IPC_NOTIFY", hv_ipc_notify_peer(ch), 0);
    expect("IPC_BAD_CHANNEL", hv_ipc_send(1000, hello, sizeof(hello)), HV_ENOENT);
    expect("IPC_BAD_BUFFER", hv_ipc_send_to(ch, (const void *)BAD_ADDRESS, 16), HV_EFAULT);
}

/* The ABI preserves every register but rax (the SDK's wrappers rely on it): loads a pattern into
 * the others, makes a call, and returns how many changed (100 more if the result is wrong). */
static long changed_registers(void)
{
    unsigned long want[13], got[13];
    for (unsigned i = 0; i < 13; i++)
        want[i] = got[i] = 0x5a5a000000000000ul | (i + 1) << 8 | i;
    want[0] = got[0] = HV_INFO_VCPU_COUNT; /* rdi selects what PARTITION_INFO returns */
    register unsigned long r8 __asm__("r8") = got[4], r9 __asm__("r9") = got[5];
    register unsigned long r10 __asm__("r10") = got[6], r11 __asm__("r11") = got[7];
    register unsigned long r12 __asm__("r12") = got[8], r13 __asm__("r13") = got[9];
    register unsigned long r14 __asm__("r14") = got[10], r15 __asm__("r15") = got[11];
    long ret;
    __asm__ volatile("out %%eax, $" HV_STR(HV_HYPERCALL_PORT)
                     : "=a"(ret), "+D"(got[0]), "+S"(got[1]), "+d"(got[2]), "+c"(got[3]),
                       "+r"(r8), "+r"(r9), "+r"(r10), "+r"(r11), "+r"(r12), "+r"(r13),
                       "+r"(r14), "+r"(r15), "+b"(got[12])
                     : "0"((unsigned long)HV_PARTITION_INFO)
                     : "memory");
    got[4] = r8, got[5] = r9, got[6] = r10, got[7] = r11, got[8] = r12, got[9] = r13;
    got[10] = r14, got[11] = r15;
    long changed = ret == 1 ? 0 : 100;
    for (unsigned i = 0; i < 13; i++)
        changed += got[i] != want[i];
    return changed;
}

static void check_errors(void)
{
    long ret = hv_hypercall0(15);
    if (ret == HV_ENOSYS)
        ret = hv_hypercall0(1000);
    expect("UNKNOWN_CALL", ret, HV_ENOSYS);
    expect("BAD_BUFFER", hv_console_write((const void *)BAD_ADDRESS, 16), HV_EFAULT);
    expect("REGISTERS_PRESERVED", changed_registers(), 0);
}


void hv_main(const struct hv_boot_info *boot, unsigned vcpu)
{
    if (vcpu != 0)
        hv_park();
    hv_printf("hypercalls: partition %u, %u vCPU, %lu MiB\n", boot->partition_id,
              boot->vcpu_count, (unsigned long)(boot->memory_size >> 20));
    hv_irq_enable_cpu();

    check_partition_info(boot, vcpu);
    check_console_and_time();
    int timer_works = check_timers();
    check_irqs();
    check_idle_yield_ipi(boot, timer_works);
    check_ipc(boot);
    check_errors();

    if (failures == 0) {
        hv_printf("hypercalls: all ok\n");
        hv_exit(0);
    }
    hv_printf("hypercalls: %u failed\n", failures);
    hv_exit(1);
}
