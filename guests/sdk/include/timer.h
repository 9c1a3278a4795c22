/* timer.h: the per-vCPU hypervisor timer (HV_TIMER_SET) and the partition clock (HV_TIME_NS).
 *
 * A timer raises its vector on the vCPU that programmed it; register a handler for the vector
 * first (hv_irq_register enables it), then start the timer.
 */
#ifndef HV_TIMER_H
#define HV_TIMER_H

#include <stdint.h>

#include "hv.h"

#define HV_NS_PER_US 1000ull
#define HV_NS_PER_MS 1000000ull
#define HV_NS_PER_S 1000000000ull

static inline long hv_timer_periodic(unsigned vector, uint64_t period_ns)
{
    return hv_timer_set(vector, period_ns, HV_TIMER_PERIODIC);
}

static inline long hv_timer_oneshot(unsigned vector, uint64_t delay_ns)
{
    return hv_timer_set(vector, delay_ns, HV_TIMER_ONESHOT);
}

static inline long hv_timer_cancel(unsigned vector)
{
    return hv_timer_set(vector, 0, HV_TIMER_ONESHOT);
}

/* Busy-waits (interrupts keep being served if enabled) for at least `ns`. */
static inline void hv_delay_ns(uint64_t ns)
{
    uint64_t end = hv_time_ns() + ns;
    while (hv_time_ns() < end)
        __asm__ volatile("pause" ::: "memory");
}

#endif
