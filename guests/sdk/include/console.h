/* console.h: formatted console output through HV_CONSOLE_WRITE.
 *
 * hv_printf formats into a stack buffer and appends it to a partition-wide line buffer; each
 * complete line (ending in '\n') is emitted with one HV_CONSOLE_WRITE, under a spinlock with
 * interrupts masked, so lines from different vCPUs and from interrupt handlers never mix.
 * A line longer than HV_CONSOLE_LINE bytes is split. One call formats at most
 * HV_PRINTF_MAX - 1 characters.
 *
 * Conversions: %d %i %u %x %X %c %s %p %%, length modifiers l, ll, z, flags '0' and '-', a
 * decimal width or '*', and a precision for %s (%.*s).
 */
#ifndef HV_CONSOLE_H
#define HV_CONSOLE_H

#include <stdarg.h>
#include <stddef.h>

#define HV_CONSOLE_LINE 256
#define HV_PRINTF_MAX 256

int hv_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int hv_vprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
/* Like snprintf: returns the length the full output would have had. */
int hv_snprintf(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int hv_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
/* Appends raw text to the line buffer (same locking as hv_printf). */
void hv_console_puts(const char *s);
/* Emits a pending partial line, if any. */
void hv_console_flush(void);

#endif
