/* uart.c: polled 16550 driver for the board UART at HV_UART_PORT (see uart.h). */
#include "hvdk.h"

#define UART(reg) ((uint16_t)(HV_UART_PORT + (reg)))
#define TX_SPIN_LIMIT 100000

void hv_uart_init(void)
{
    hv_outb(UART(HV_UART_IER), 0x00);  /* no interrupts */
    hv_outb(UART(HV_UART_LCR), 0x80);  /* DLAB on */
    hv_outb(UART(0), 0x01);            /* divisor 1 = 115200 baud */
    hv_outb(UART(1), 0x00);
    hv_outb(UART(HV_UART_LCR), 0x03);  /* 8N1, DLAB off */
    hv_outb(UART(HV_UART_FCR), 0xC7);  /* FIFOs on and cleared, 14-byte threshold */
    hv_outb(UART(HV_UART_MCR), 0x0B);  /* DTR, RTS, OUT2 */
}

void hv_uart_putc(char c)
{
    for (int i = 0; i < TX_SPIN_LIMIT; i++) {
        if (hv_inb(UART(HV_UART_LSR)) & HV_UART_LSR_THRE)
            break;
        hv_cpu_relax();
    }
    hv_outb(UART(HV_UART_THR), (uint8_t)c);
}

void hv_uart_puts(const char *s)
{
    while (*s)
        hv_uart_putc(*s++);
}

int hv_uart_getc(void)
{
    if (!(hv_inb(UART(HV_UART_LSR)) & HV_UART_LSR_DR))
        return -1;
    return hv_inb(UART(HV_UART_RBR));
}

long hv_uart_enable_rx_irq(hv_irq_handler handler)
{
    long ret = hv_irq_register(HV_UART_VECTOR, handler);
    if (ret < 0)
        return ret;
    hv_outb(UART(HV_UART_IER), hv_inb(UART(HV_UART_IER)) | HV_UART_IER_RDA);
    return 0;
}

void hv_uart_disable_rx_irq(void)
{
    hv_outb(UART(HV_UART_IER), hv_inb(UART(HV_UART_IER)) & (uint8_t)~HV_UART_IER_RDA);
    hv_irq_unregister(HV_UART_VECTOR);
}
