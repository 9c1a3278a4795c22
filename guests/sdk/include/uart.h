/* uart.h: the board's 16550 UART at HV_UART_PORT (0x3F8): polled transmit, non-blocking
 * receive, and the receive interrupt on HV_UART_VECTOR (36).
 *
 * Bytes written here appear on the host console like HV_CONSOLE_WRITE lines. Use either the
 * UART or hv_printf for a given line, not both.
 */
#ifndef HV_UART_H
#define HV_UART_H

#include <stdint.h>

#include "irq.h"

#define HV_UART_RBR 0 /* receive buffer (read, DLAB=0) */
#define HV_UART_THR 0 /* transmit holding (write, DLAB=0) */
#define HV_UART_IER 1 /* interrupt enable (DLAB=0) */
#define HV_UART_IIR 2 /* interrupt identification (read) */
#define HV_UART_FCR 2 /* FIFO control (write) */
#define HV_UART_LCR 3 /* line control; bit 7 is DLAB */
#define HV_UART_MCR 4 /* modem control */
#define HV_UART_LSR 5 /* line status */
#define HV_UART_MSR 6 /* modem status */
#define HV_UART_SCR 7 /* scratch */

#define HV_UART_LSR_DR 0x01   /* data ready */
#define HV_UART_LSR_THRE 0x20 /* transmit holding register empty */
#define HV_UART_IER_RDA 0x01  /* receive data available interrupt */

static inline void hv_outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port) : "memory");
}
static inline void hv_outw(uint16_t port, uint16_t v)
{
    __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port) : "memory");
}
static inline void hv_outl(uint16_t port, uint32_t v)
{
    __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port) : "memory");
}
static inline uint8_t hv_inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port) : "memory");
    return v;
}
static inline uint16_t hv_inw(uint16_t port)
{
    uint16_t v;
    __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port) : "memory");
    return v;
}
static inline uint32_t hv_inl(uint16_t port)
{
    uint32_t v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port) : "memory");
    return v;
}

/* 115200 8N1, FIFOs on, all UART interrupts off. */
void hv_uart_init(void);
/* Waits (bounded) for the transmitter, then sends one byte. */
void hv_uart_putc(char c);
/* Sends a string as is ('\n' is not translated). */
void hv_uart_puts(const char *s);
/* The next received byte, or -1 if none is waiting. */
int hv_uart_getc(void);
/* Registers `handler` on HV_UART_VECTOR (which also enables the vector) and sets IER.RDA.
 * The handler should drain the receiver with hv_uart_getc. */
long hv_uart_enable_rx_irq(hv_irq_handler handler);
void hv_uart_disable_rx_irq(void);

#endif
