/* random: a hostile test guest, 1 vCPU. With a fixed-seed xorshift64 PRNG it performs 100,000
 * random operations, each one of:
 *   - a hypercall with a random number in 0..40 (never HV_EXIT or HV_IDLE) and random arguments:
 *     small numbers, huge and non-canonical values, pointers into a scratch buffer (possibly
 *     unaligned), pointers past the end of RAM or straddling it. Timer periods are at least
 *     1 ms and at most 2 of its timers run at a time (the oldest is cancelled), so the guest keeps
 *     progressing; HV_CONSOLE_WRITE only ever gets invalid buffers or a zero length, so the
 *     console stays readable;
 *   - `in` or `out` of 1, 2 or 4 bytes on a random port, except the hypercall port (0xE0..0xE3)
 *     and, for `out`, the UART data register 0x3F8 (which would print garbage);
 *   - an MMIO read or write of 1, 2, 4 or 8 bytes (naturally aligned) at a random address in
 *     [0xA0000000, 0xFFFFF000), never in its own RAM or an IPC window.
 * Interrupts stay enabled (IF=1) and every vector 32..255 is enabled at start with a handler that
 * counts it (the SDK sends the EOI); the UART vector's handler also clears the UART's interrupt
 * conditions. An exception (vector < 32) is reported and ends the guest with 128 + vector.
 *
 * Output (one line each):
 *   random: partition <id>, seed 0x<seed>, 100000 operations
 *   random: <n> operations                                   n = 10000, 20000, ..., 100000
 *   random: <h> hypercalls, <p> port accesses, <m> mmio accesses
 *   random: 100000 operations done
 * then HV_EXIT(0).
 */
#include "hvdk.h"

#define RANDOM_SEED 0x9E3779B97F4A7C15ull
#define RANDOM_OPS 100000u
#define RANDOM_REPORT_EVERY 10000u
#define RANDOM_MAX_CALL 40
/* Timer periods below this are raised (by adding it). The brief asks for >= 100 us; 1 ms keeps
 * the guest progressing on slow (nested) virtualization too, where an interrupt costs ~200 us. */
#define RANDOM_MIN_PERIOD_NS 1000000ull
/* At most this many timers the guest set are left running; the oldest is cancelled first. */
#define RANDOM_MAX_TIMERS 2
#define MMIO_LOW 0xA0000000ull
#define MMIO_HIGH 0xFFFFF000ull

static uint64_t rng_state = RANDOM_SEED;

/* Scratch memory that random pointer arguments may point into (hypercalls that write to guest
 * memory only ever get these, so the guest never corrupts itself). */
static uint8_t random_scratch[4 * HV_IPC_MAX_MESSAGE] __attribute__((aligned(64)));
#define SCRATCH_SPAN (2 * HV_IPC_MAX_MESSAGE) /* pointer offsets stay below this */

unsigned long random_hypercalls, random_ports, random_mmio;
volatile unsigned long random_interrupts;
/* The last operation, for post-mortem inspection with gdb. */
volatile uint64_t random_last_op[6];

static uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng_state = x;
    return x;
}

static uint64_t rng_below(uint64_t n) { return rng() % n; }

static uint64_t memory_size(void) { return hv_boot->memory_size; }

/* A pointer outside RAM or non-canonical: the hypervisor must reject any access through it. */
static uint64_t invalid_pointer(void)
{
    switch (rng_below(5)) {
    case 0:
        return 0xFFFFFFFF0000ull + rng_below(0x10000);
    case 1:
        return 0x8000000000000000ull | rng();
    case 2:
        return memory_size() + rng_below(1ull << 32);
    case 3:
        return ~0ull - rng_below(4096);
    default:
        return rng() | (1ull << 47);
    }
}

/* A buffer that starts in RAM and runs past its end (len > 0 bytes). */
static void straddling_buffer(uint64_t *addr, uint64_t *len)
{
    uint64_t inside = 1 + rng_below(16);
    *addr = memory_size() - inside;
    *len = inside + 1 + rng_below(64);
}

/* For arguments the hypervisor only reads: invalid, or straddling the end of RAM (whose length
 * argument may well be short enough to make it valid: the hypervisor then reads those bytes). */
static uint64_t bad_pointer(void)
{
    if (rng_below(4) == 0) {
        uint64_t addr, len;
        straddling_buffer(&addr, &len);
        return addr;
    }
    return invalid_pointer();
}

static uint64_t scratch_pointer(void)
{
    return (uint64_t)&random_scratch[rng_below(SCRATCH_SPAN)];
}

static uint64_t random_length(void)
{
    switch (rng_below(6)) {
    case 0:
        return 0;
    case 1:
        return 1 + rng_below(64);
    case 2:
        return rng_below(HV_IPC_MAX_MESSAGE + 1);
    case 3:
        return HV_IPC_MAX_MESSAGE + 1 + rng_below(4);
    case 4:
        return rng();
    default:
        return 1ull << rng_below(40);
    }
}

static uint64_t random_arg(void)
{
    switch (rng_below(8)) {
    case 0:
        return rng_below(8);
    case 1:
        return rng_below(300);
    case 2:
        return rng();
    case 3:
        return scratch_pointer();
    case 4:
        return bad_pointer();
    case 5:
        return random_length();
    case 6:
        return ~0ull;
    default:
        return (uint64_t)(int64_t)(int32_t)rng();
    }
}

/* Vectors of the timers this guest started (so it can bound the interrupt load). */
static unsigned timer_vectors[RANDOM_MAX_TIMERS];
static unsigned timer_count, timer_next;

static void track_timer(uint64_t vector, uint64_t period)
{
    if (vector < HV_FIRST_VECTOR || vector > 255 || period == 0)
        return;
    for (unsigned i = 0; i < timer_count; i++) {
        if (timer_vectors[i] == vector)
            return;
    }
    if (timer_count < RANDOM_MAX_TIMERS) {
        timer_vectors[timer_count++] = (unsigned)vector;
        return;
    }
    hv_timer_cancel(timer_vectors[timer_next]);
    timer_vectors[timer_next] = (unsigned)vector;
    timer_next = (timer_next + 1) % RANDOM_MAX_TIMERS;
}

static void random_hypercall(void)
{
    unsigned long nr;
    do {
        nr = rng_below(RANDOM_MAX_CALL + 1);
    } while (nr == HV_EXIT || nr == HV_IDLE);

    uint64_t a[4] = {random_arg(), random_arg(), random_arg(), random_arg()};
    switch (nr) {
    case HV_CONSOLE_WRITE:
        /* never a valid buffer with a nonzero length: no garbage on the console */
        switch (rng_below(3)) {
        case 0:
            a[0] = invalid_pointer();
            break;
        case 1:
            straddling_buffer(&a[0], &a[1]);
            break;
        default:
            a[0] = scratch_pointer();
            a[1] = 0;
            break;
        }
        break;
    case HV_TIMER_SET:
        if (rng_below(2))
            a[0] = HV_FIRST_VECTOR + rng_below(256 - HV_FIRST_VECTOR);
        if (a[1] != 0 && a[1] < RANDOM_MIN_PERIOD_NS)
            a[1] = RANDOM_MIN_PERIOD_NS + a[1];
        track_timer(a[0], a[1]);
        break;
    /* calls that write guest memory only get the scratch buffer or invalid pointers */
    case HV_IPC_SEND:
    case HV_IPC_RECEIVE:
        a[0] = rng_below(2) ? rng_below(HV_MAX_IPC + 2) : a[0];
        if (rng_below(2))
            a[1] = scratch_pointer();
        else
            a[1] = nr == HV_IPC_SEND ? bad_pointer() : invalid_pointer();
        a[2] = random_length();
        break;
    case HV_DM_RECEIVE:
        a[0] = rng_below(2) ? scratch_pointer() : invalid_pointer();
        break;
    case HV_DM_COPY_FROM:
        a[2] = rng_below(2) ? scratch_pointer() : invalid_pointer();
        if (a[3] > HV_IPC_MAX_MESSAGE && a[2] < memory_size())
            a[3] = rng_below(HV_IPC_MAX_MESSAGE + 1);
        break;
    default:
        break;
    }
    random_last_op[0] = 1;
    random_last_op[1] = nr;
    for (int i = 0; i < 4; i++)
        random_last_op[2 + i] = a[i];
    hv_hypercall(nr, a[0], a[1], a[2], a[3]);
    random_hypercalls++;
}

static int port_forbidden(unsigned port, unsigned size, int write)
{
    unsigned end = port + size; /* exclusive */
    if (port < HV_HYPERCALL_PORT + 4 && end > HV_HYPERCALL_PORT)
        return 1;
    if (write && port <= HV_UART_PORT && end > HV_UART_PORT)
        return 1;
    return 0;
}

static void random_port(void)
{
    static const unsigned sizes[3] = {1, 2, 4};
    unsigned size = sizes[rng_below(3)];
    int write = (int)rng_below(2);
    unsigned port;
    do {
        port = (unsigned)rng_below(0x10000 - 3);
    } while (port_forbidden(port, size, write));
    uint32_t value = (uint32_t)rng();

    random_last_op[0] = 2;
    random_last_op[1] = port;
    random_last_op[2] = size;
    random_last_op[3] = (uint64_t)write;
    random_last_op[4] = value;
    uint16_t p = (uint16_t)port;
    if (write) {
        if (size == 1)
            hv_outb(p, (uint8_t)value);
        else if (size == 2)
            hv_outw(p, (uint16_t)value);
        else
            hv_outl(p, value);
    } else {
        if (size == 1)
            (void)hv_inb(p);
        else if (size == 2)
            (void)hv_inw(p);
        else
            (void)hv_inl(p);
    }
    random_ports++;
}

static int mmio_forbidden(uint64_t addr, unsigned size)
{
    if (addr < memory_size())
        return 1;
    const struct hv_boot_info *boot = hv_boot;
    unsigned n = boot->ipc_count < HV_MAX_IPC ? boot->ipc_count : HV_MAX_IPC;
    for (unsigned i = 0; i < n; i++) {
        uint64_t base = boot->ipc[i].shm_addr, len = boot->ipc[i].shm_size;
        if (addr + size > base && addr < base + len)
            return 1;
    }
    return 0;
}

static void random_mmio_access(void)
{
    unsigned size = 1u << rng_below(4);
    int write = (int)rng_below(2);
    uint64_t addr;
    do {
        addr = (MMIO_LOW + rng_below(MMIO_HIGH - MMIO_LOW)) & ~(uint64_t)(size - 1);
    } while (mmio_forbidden(addr, size));
    uint64_t value = rng();

    random_last_op[0] = 3;
    random_last_op[1] = addr;
    random_last_op[2] = size;
    random_last_op[3] = (uint64_t)write;
    random_last_op[4] = value;
    if (write) {
        switch (size) {
        case 1: *(volatile uint8_t *)addr = (uint8_t)value; break;
        case 2: *(volatile uint16_t *)addr = (uint16_t)value; break;
        case 4: *(volatile uint32_t *)addr = (uint32_t)value; break;
        default: *(volatile uint64_t *)addr = value; break;
        }
    } else {
        switch (size) {
        case 1: (void)*(volatile uint8_t *)addr; break;
        case 2: (void)*(volatile uint16_t *)addr; break;
        case 4: (void)*(volatile uint32_t *)addr; break;
        default: (void)*(volatile uint64_t *)addr; break;
        }
    }
    random_mmio++;
}

static void on_any_interrupt(unsigned vector, struct hv_irq_frame *frame)
{
    (void)vector;
    (void)frame;
    random_interrupts++;
}

static void on_uart(unsigned vector, struct hv_irq_frame *frame)
{
    on_any_interrupt(vector, frame);
    /* clear every UART interrupt condition: identification, line status, data, modem status */
    for (int i = 0; i < 16 && !(hv_inb(HV_UART_PORT + HV_UART_IIR) & 1); i++) {
        (void)hv_inb(HV_UART_PORT + HV_UART_LSR);
        (void)hv_inb(HV_UART_PORT + HV_UART_RBR);
        (void)hv_inb(HV_UART_PORT + HV_UART_MSR);
    }
}

void hv_main(const struct hv_boot_info *boot, unsigned vcpu)
{
    if (vcpu != 0)
        hv_park();
    hv_printf("random: partition %u, seed 0x%llx, %u operations\n", boot->partition_id,
              RANDOM_SEED, RANDOM_OPS);

    /* A handler on every vector, all enabled (random HV_IRQ_DISABLE calls turn some off): every
     * interrupt the random timers and IPIs cause is counted and ended. */
    for (unsigned v = HV_FIRST_VECTOR; v < 256; v++)
        hv_irq_register(v, v == HV_UART_VECTOR ? on_uart : on_any_interrupt);
    hv_irq_enable_cpu();

    for (unsigned op = 1; op <= RANDOM_OPS; op++) {
        switch (rng_below(3)) {
        case 0:
            random_hypercall();
            break;
        case 1:
            random_port();
            break;
        default:
            if (memory_size() < MMIO_HIGH)
                random_mmio_access();
            else
                random_port(); /* no MMIO hole above RAM */
            break;
        }
        if (op % RANDOM_REPORT_EVERY == 0)
            hv_printf("random: %u operations\n", op);
    }
    hv_printf("random: %lu hypercalls, %lu port accesses, %lu mmio accesses\n", random_hypercalls,
              random_ports, random_mmio);
    hv_printf("random: %u operations done\n", RANDOM_OPS);
    hv_exit(0);
}
