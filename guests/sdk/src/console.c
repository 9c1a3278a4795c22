/* console.c: hv_printf and friends (see console.h). */
#include "hvdk.h"

struct out {
    char *buf;
    size_t size; /* capacity including the terminating NUL */
    size_t len;  /* characters produced so far (may exceed size) */
};

static void out_char(struct out *o, char c)
{
    if (o->len + 1 < o->size)
        o->buf[o->len] = c;
    o->len++;
}

static void out_pad(struct out *o, char c, int n)
{
    while (n-- > 0)
        out_char(o, c);
}

/* Formats `v` (already made non-negative) with the given base, sign and padding. */
static void out_number(struct out *o, unsigned long long v, unsigned base, int upper, int negative,
                       int width, int zero_pad, int left)
{
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = digits[v % base];
        v /= base;
    } while (v);
    int len = n + (negative ? 1 : 0);
    int pad = width > len ? width - len : 0;
    if (!left && !zero_pad)
        out_pad(o, ' ', pad);
    if (negative)
        out_char(o, '-');
    if (!left && zero_pad)
        out_pad(o, '0', pad);
    while (n)
        out_char(o, tmp[--n]);
    if (left)
        out_pad(o, ' ', pad);
}

int hv_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
    struct out o = {.buf = buf, .size = size, .len = 0};

    for (const char *p = fmt; *p; p++) {
        if (*p != '%') {
            out_char(&o, *p);
            continue;
        }
        const char *start = p++;
        int zero_pad = 0, left = 0, width = 0, precision = -1, lng = 0;
        for (;; p++) {
            if (*p == '0')
                zero_pad = 1;
            else if (*p == '-')
                left = 1;
            else
                break;
        }
        if (*p == '*') {
            width = va_arg(ap, int);
            if (width < 0) {
                left = 1;
                width = -width;
            }
            p++;
        } else {
            while (*p >= '0' && *p <= '9')
                width = width * 10 + (*p++ - '0');
        }
        if (*p == '.') {
            p++;
            precision = 0;
            if (*p == '*') {
                precision = va_arg(ap, int);
                p++;
            } else {
                while (*p >= '0' && *p <= '9')
                    precision = precision * 10 + (*p++ - '0');
            }
        }
        if (*p == 'l') {
            lng = 1;
            p++;
            if (*p == 'l') {
                lng = 2;
                p++;
            }
        } else if (*p == 'z') {
            lng = 1;
            p++;
        }
        if (left)
            zero_pad = 0;

        switch (*p) {
        case 'd':
        case 'i': {
            long long v = lng == 2 ? va_arg(ap, long long)
                        : lng == 1 ? va_arg(ap, long)
                                   : va_arg(ap, int);
            unsigned long long mag = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
            out_number(&o, mag, 10, 0, v < 0, width, zero_pad, left);
            break;
        }
        case 'u':
        case 'x':
        case 'X': {
            unsigned long long v = lng == 2 ? va_arg(ap, unsigned long long)
                                 : lng == 1 ? va_arg(ap, unsigned long)
                                            : va_arg(ap, unsigned int);
            out_number(&o, v, *p == 'u' ? 10 : 16, *p == 'X', 0, width, zero_pad, left);
            break;
        }
        case 'p': {
            unsigned long v = (unsigned long)va_arg(ap, void *);
            out_char(&o, '0');
            out_char(&o, 'x');
            out_number(&o, v, 16, 0, 0, width > 2 ? width - 2 : 0, zero_pad, left);
            break;
        }
        case 'c': {
            char c = (char)va_arg(ap, int);
            if (!left)
                out_pad(&o, ' ', width - 1);
            out_char(&o, c);
            if (left)
                out_pad(&o, ' ', width - 1);
            break;
        }
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            int n = (int)(precision >= 0 ? strnlen(s, (size_t)precision) : strlen(s));
            if (!left)
                out_pad(&o, ' ', width - n);
            for (int i = 0; i < n; i++)
                out_char(&o, s[i]);
            if (left)
                out_pad(&o, ' ', width - n);
            break;
        }
        case '%':
            out_char(&o, '%');
            break;
        default:
            /* unknown conversion (or end of string): print it as written */
            for (const char *q = start; q <= p && *q; q++)
                out_char(&o, *q);
            if (!*p)
                p--;
            break;
        }
    }
    if (size)
        buf[o.len < size ? o.len : size - 1] = 0;
    return (int)o.len;
}

int hv_snprintf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = hv_vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

static hv_spinlock_t console_lock = HV_SPINLOCK_INIT;
static char console_line[HV_CONSOLE_LINE];
static size_t console_used;

/* Caller holds console_lock. */
static void console_emit(void)
{
    if (console_used) {
        hv_console_write(console_line, console_used);
        console_used = 0;
    }
}

static void console_append(const char *s, size_t n)
{
    uint64_t flags = hv_spin_lock_irqsave(&console_lock);
    for (size_t i = 0; i < n; i++) {
        console_line[console_used++] = s[i];
        if (s[i] == '\n' || console_used == sizeof(console_line))
            console_emit();
    }
    hv_spin_unlock_irqrestore(&console_lock, flags);
}

void hv_console_puts(const char *s) { console_append(s, strlen(s)); }

void hv_console_flush(void)
{
    uint64_t flags = hv_spin_lock_irqsave(&console_lock);
    console_emit();
    hv_spin_unlock_irqrestore(&console_lock, flags);
}

int hv_vprintf(const char *fmt, va_list ap)
{
    char buf[HV_PRINTF_MAX];
    int n = hv_vsnprintf(buf, sizeof(buf), fmt, ap);
    size_t len = n < (int)sizeof(buf) ? (size_t)n : sizeof(buf) - 1;
    console_append(buf, len);
    return n;
}

int hv_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = hv_vprintf(fmt, ap);
    va_end(ap);
    return n;
}
