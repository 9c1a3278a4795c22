/* sensor.h: the para-virtual "sensor" device, shared by its driver (control) and its device model
 * (sensor-model).
 *
 * The device is a 4 KiB MMIO window in the client (the system description's [[device]] "sensor",
 * `served_by = "sensor-model"`); every access is a request answered by the model partition.
 * Registers, 32 bits each:
 *
 *   0x00 ID      read: SENSOR_ID ("SENS")
 *   0x04 STATUS  read: bit 0 (SENSOR_STATUS_READY) = a sample is ready
 *   0x08 DATA    read: the current sample; clears STATUS.ready
 *   0x0C CTRL    write SENSOR_CTRL_START: run one conversion (read: the last value written)
 *
 * A conversion produces sample n (n = 1, 2, ...) = sensor_sample(n) = (n * 37 + 11) % 1000, sets
 * STATUS.ready, copies a struct sensor_mailbox { n, value } to the granted client buffer at
 * SENSOR_MAILBOX_ADDR (HV_DM_COPY_TO), then raises the device IRQ. The conversion is finished
 * before the CTRL write completes in the client.
 *
 * When the model does not answer in time (or has crashed) the access is a bus error: reads return
 * all ones (SENSOR_BUS_ERROR), writes are dropped. Offsets not listed above are bus errors too.
 */
#ifndef SENSOR_H
#define SENSOR_H

#include <stdint.h>

/* The device's name in the system description / boot info. */
#define SENSOR_DEVICE "sensor"

#define SENSOR_REG_ID 0x00
#define SENSOR_REG_STATUS 0x04
#define SENSOR_REG_DATA 0x08
#define SENSOR_REG_CTRL 0x0C
/* Bytes of MMIO window the registers need. */
#define SENSOR_MMIO_MIN 0x10

#define SENSOR_ID 0x53454E53u /* "SENS" */
#define SENSOR_STATUS_READY 0x1u
#define SENSOR_CTRL_START 0x1u
/* What a 32-bit read returns when the model did not answer. */
#define SENSOR_BUS_ERROR 0xFFFFFFFFu

/* The client buffer the model may write (the device's grant): client guest-physical address. */
#define SENSOR_MAILBOX_ADDR 0xE00000ull
#define SENSOR_MAILBOX_SIZE 0x1000ull

/* What the model copies to SENSOR_MAILBOX_ADDR after each conversion. */
struct sensor_mailbox {
    uint32_t seq;   /* offset 0: the sample number n */
    uint32_t value; /* offset 4: sensor_sample(n) */
};

/* Sample n of the deterministic sequence (n >= 1). */
static inline uint32_t sensor_sample(uint32_t n)
{
    return (uint32_t)(((uint64_t)n * 37u + 11u) % 1000u);
}

/* 32-bit MMIO accessors: one plain `mov` each, so the access the hypervisor decodes is always a
 * simple 4-byte load or store (the compiler could otherwise fold a volatile read into another
 * instruction, e.g. a cmp with a memory operand). */
static inline uint32_t sensor_mmio_read32(uint64_t addr)
{
    uint32_t value;
    __asm__ volatile("movl (%1), %0" : "=r"(value) : "r"(addr) : "memory");
    return value;
}

static inline void sensor_mmio_write32(uint64_t addr, uint32_t value)
{
    __asm__ volatile("movl %0, (%1)" ::"r"(value), "r"(addr) : "memory");
}

#endif
