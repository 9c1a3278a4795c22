/* spinlock.h: a test-and-test-and-set spinlock for sharing data between the vCPUs of a partition.
 *
 * hv_spin_lock_irqsave also masks interrupts on the calling vCPU, so the same lock may be taken
 * from interrupt handlers without deadlocking against the code they interrupted.
 */
#ifndef HV_SPINLOCK_H
#define HV_SPINLOCK_H

#include <stdint.h>

typedef struct {
    volatile uint32_t locked;
} hv_spinlock_t;

#define HV_SPINLOCK_INIT {0}

static inline void hv_cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }

static inline int hv_spin_trylock(hv_spinlock_t *lock)
{
    return __atomic_exchange_n(&lock->locked, 1, __ATOMIC_ACQUIRE) == 0;
}

static inline void hv_spin_lock(hv_spinlock_t *lock)
{
    while (!hv_spin_trylock(lock)) {
        while (__atomic_load_n(&lock->locked, __ATOMIC_RELAXED))
            hv_cpu_relax();
    }
}

static inline void hv_spin_unlock(hv_spinlock_t *lock)
{
    __atomic_store_n(&lock->locked, 0, __ATOMIC_RELEASE);
}

/* RFLAGS of the calling vCPU; bit 9 (0x200) is IF. */
static inline uint64_t hv_read_rflags(void)
{
    uint64_t flags;
    __asm__ volatile("pushfq; popq %0" : "=r"(flags)::"memory");
    return flags;
}

/* Masks interrupts and returns the previous RFLAGS, for hv_irq_restore. */
static inline uint64_t hv_irq_save(void)
{
    uint64_t flags = hv_read_rflags();
    __asm__ volatile("cli" ::: "memory");
    return flags;
}

/* Re-enables interrupts if they were enabled when hv_irq_save was called. */
static inline void hv_irq_restore(uint64_t flags)
{
    if (flags & 0x200)
        __asm__ volatile("sti" ::: "memory");
}

static inline uint64_t hv_spin_lock_irqsave(hv_spinlock_t *lock)
{
    uint64_t flags = hv_irq_save();
    hv_spin_lock(lock);
    return flags;
}

static inline void hv_spin_unlock_irqrestore(hv_spinlock_t *lock, uint64_t flags)
{
    hv_spin_unlock(lock);
    hv_irq_restore(flags);
}

#endif
