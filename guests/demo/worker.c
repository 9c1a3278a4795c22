/* worker: demo guest, 2 vCPUs. Both vCPUs count primes (segmented sieve) in blocks of 10,000
 * numbers: global block b covers [b * 10000, (b + 1) * 10000) and is computed by vCPU b % 2
 * (compute_block is the function to break on in gdb; worker_progress[i] counts the blocks vCPU i
 * finished). The vCPUs
 * compute in parallel but print in block order, so the output is deterministic. When all blocks
 * are done, vCPU 0 prints a line proving both vCPUs ran, then pings vCPU 1 with an IPI
 * (WORKER_IPI_VECTOR), which vCPU 1 answers with an IPI back; vCPU 0 prints whether the answer
 * came. Then both idle in a 100 Hz tick loop, re-checking one block per second (so compute_block
 * keeps being called), and vCPU 0 prints a line per second. The partition has one virtual timer,
 * programmed by vCPU 0; its tick handler relays each tick to vCPU 1 as an IPI on the timer vector.
 * vCPUs beyond the second park.
 *
 * Output (one line each):
 *   worker: partition <id>, <n> vCPU, <b> blocks of 10000
 *   worker: vcpu <i> block <b> primes <p>                        b = 0 .. 19, in order, i = b % 2
 *   worker: <n> vCPUs ran, progress <p0> <p1>, <t> primes below <N>   ("2 vCPUs ran, progress
 *                                                                 10 10, 17984 primes below 200000")
 *   worker: vcpu 1 answered an ipi                               with 2 vCPUs (or "worker: vcpu 1
 *                                                                 did not answer an ipi" after 5 s)
 *   worker: idle <s> s, block <b> primes <p>                     every second (vCPU 0 only)
 */
#include "hvdk.h"
#include "demo.h"

#define WORKER_MAX_VCPUS 2
#define WORKER_BLOCKS 20
#define WORKER_BLOCK_SIZE 10000ul
#define WORKER_IDLE_TICK_NS 10000000ull /* 100 Hz */
#define WORKER_IDLE_TICKS_PER_S 100
#define WORKER_IPI_VECTOR 34                /* vCPU 0 pings vCPU 1, which answers on it too */
#define WORKER_IPI_TIMEOUT_NS 5000000000ull /* how long vCPU 0 waits for the answer */

/* Blocks finished by each vCPU (watch it from gdb: `p worker_progress`). */
volatile unsigned long worker_progress[WORKER_MAX_VCPUS];
/* Primes per block, filled in as the blocks are computed. */
volatile unsigned long worker_primes[WORKER_BLOCKS];
/* The next block to be printed: vCPUs print in turn, in block order. */
volatile unsigned worker_turn;
/* Idle-loop timer ticks per vCPU. */
volatile unsigned long worker_ticks[WORKER_MAX_VCPUS];
/* IPIs on WORKER_IPI_VECTOR taken by each vCPU. */
volatile unsigned long worker_ipis[WORKER_MAX_VCPUS];
/* vCPUs that compute (1 or 2). */
static unsigned worker_count;

/* Trial division; only used for the small sieving primes. */
static int is_prime(unsigned long n)
{
    if (n < 2)
        return 0;
    for (unsigned long d = 2; d * d <= n; d++) {
        if (n % d == 0)
            return 0;
    }
    return 1;
}

/* Counts the primes in [block * 10000, (block + 1) * 10000) with a segmented sieve. */
HV_NOINLINE unsigned long compute_block(unsigned long block)
{
    uint8_t composite[WORKER_BLOCK_SIZE];
    unsigned long lo = block * WORKER_BLOCK_SIZE, hi = lo + WORKER_BLOCK_SIZE;

    memset(composite, 0, sizeof(composite));
    for (unsigned long n = lo; n < 2 && n < hi; n++)
        composite[n - lo] = 1; /* 0 and 1 */
    for (unsigned long p = 2; p * p < hi; p++) {
        if (!is_prime(p))
            continue;
        unsigned long first = (lo + p - 1) / p * p;
        if (first < p * p)
            first = p * p;
        for (unsigned long m = first; m < hi; m += p)
            composite[m - lo] = 1;
    }
    unsigned long count = 0;
    for (unsigned long i = 0; i < WORKER_BLOCK_SIZE; i++)
        count += !composite[i];
    return count;
}

static void wait_for_turn(unsigned block)
{
    for (unsigned long spins = 1; __atomic_load_n(&worker_turn, __ATOMIC_ACQUIRE) != block; spins++) {
        hv_cpu_relax();
        if (spins % 4096 == 0)
            hv_yield();
    }
}

static void on_tick(unsigned vector, struct hv_irq_frame *frame)
{
    (void)vector;
    (void)frame;
    /* the tick is for the vCPU that runs the handler: its own timer */
    unsigned vcpu = (unsigned)hv_partition_info(HV_INFO_VCPU_INDEX);
    if (vcpu < WORKER_MAX_VCPUS)
        worker_ticks[vcpu]++;
    /* vCPU 0 owns the partition's timer and passes each tick on to its sibling */
    if (vcpu == 0 && worker_count > 1)
        hv_send_ipi(1, DEMO_TIMER_VECTOR);
}

static void on_ipi(unsigned vector, struct hv_irq_frame *frame)
{
    (void)vector;
    (void)frame;
    unsigned vcpu = (unsigned)hv_partition_info(HV_INFO_VCPU_INDEX);
    if (vcpu < WORKER_MAX_VCPUS)
        __atomic_fetch_add(&worker_ipis[vcpu], 1, __ATOMIC_RELEASE);
    if (vcpu == 1)
        hv_send_ipi(0, WORKER_IPI_VECTOR); /* answer the ping */
}

/* vCPU 0: sends an IPI to vCPU 1 and waits, interrupts on, for vCPU 1's answer (vCPU 1 takes the
 * ping once it idles with interrupts on) for at most WORKER_IPI_TIMEOUT_NS. */
static void ping_sibling(void)
{
    unsigned long before = __atomic_load_n(&worker_ipis[0], __ATOMIC_ACQUIRE);
    uint64_t deadline = hv_time_ns() + WORKER_IPI_TIMEOUT_NS;
    hv_send_ipi(1, WORKER_IPI_VECTOR);
    hv_irq_enable_cpu();
    while (__atomic_load_n(&worker_ipis[0], __ATOMIC_ACQUIRE) == before && hv_time_ns() < deadline)
        hv_yield();
    if (__atomic_load_n(&worker_ipis[0], __ATOMIC_ACQUIRE) != before)
        hv_printf("worker: vcpu 1 answered an ipi\n");
    else
        hv_printf("worker: vcpu 1 did not answer an ipi\n");
}

static HV_NOINLINE void idle_loop(unsigned vcpu)
{
    hv_irq_register(DEMO_TIMER_VECTOR, on_tick);
    if (vcpu == 0)
        hv_timer_periodic(DEMO_TIMER_VECTOR, WORKER_IDLE_TICK_NS);
    unsigned long second = 0;
    for (;;) {
        hv_wait_for_interrupt();
        while (worker_ticks[vcpu] / WORKER_IDLE_TICKS_PER_S > second) {
            second++;
            unsigned long block = second % WORKER_BLOCKS;
            unsigned long primes = compute_block(block);
            if (vcpu == 0)
                hv_printf("worker: idle %lu s, block %lu primes %lu\n", second, block, primes);
        }
    }
}

void hv_main(const struct hv_boot_info *boot, unsigned vcpu)
{
    unsigned workers = boot->vcpu_count < WORKER_MAX_VCPUS ? boot->vcpu_count : WORKER_MAX_VCPUS;
    if (workers == 0)
        workers = 1;
    if (vcpu >= workers)
        hv_park();
    worker_count = workers;
    hv_irq_register(WORKER_IPI_VECTOR, on_ipi);

    if (vcpu == 0)
        hv_printf("worker: partition %u, %u vCPU, %u blocks of %lu\n", boot->partition_id,
                  boot->vcpu_count, WORKER_BLOCKS, WORKER_BLOCK_SIZE);

    for (unsigned block = vcpu; block < WORKER_BLOCKS; block += workers) {
        unsigned long primes = compute_block(block);
        worker_primes[block] = primes;
        worker_progress[vcpu]++;
        wait_for_turn(block);
        hv_printf("worker: vcpu %u block %u primes %lu\n", vcpu, block, primes);
        __atomic_store_n(&worker_turn, block + 1, __ATOMIC_RELEASE);
    }

    if (vcpu == 0) {
        wait_for_turn(WORKER_BLOCKS);
        unsigned long total = 0;
        for (unsigned b = 0; b < WORKER_BLOCKS; b++)
            total += worker_primes[b];
        hv_printf("worker: %u vCPUs ran, progress %lu %lu, %lu primes below %lu\n", workers,
                  worker_progress[0], worker_progress[1], total,
                  WORKER_BLOCKS * WORKER_BLOCK_SIZE);
        if (workers > 1)
            ping_sibling();
    }
    idle_loop(vcpu);
}
