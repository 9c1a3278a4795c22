/* demo.h: definitions shared by the demo guests (control, telemetry, worker). */
#ifndef DEMO_H
#define DEMO_H

#include <stdint.h>

/* The channel between control and telemetry, by name in the system description. */
#define DEMO_TELEMETRY_CHANNEL "telemetry"

/* Vector the demos use for their periodic timer. */
#define DEMO_TIMER_VECTOR 32

/* control's tick: 1 kHz. */
#define DEMO_TICK_NS 1000000ull
#define DEMO_TICKS_PER_S 1000u

#define DEMO_TELEMETRY_VERSION 1

/* One telemetry message, control -> telemetry, sent once per second of uptime. */
struct demo_telemetry {
    uint32_t seq;           /* 1, 2, 3, ... */
    uint32_t version;       /* DEMO_TELEMETRY_VERSION */
    uint64_t ticks;         /* timer ticks at the one-second boundary (seq * 1000) */
    uint64_t uptime_s;      /* seconds of uptime (= seq) */
    uint64_t send_failures; /* HV_IPC_SEND failures before this message */
    uint64_t time_ns;       /* HV_TIME_NS when sent (not printed: not deterministic) */
};

#endif
