/* hv_string.h: the few <string.h> functions guests need. gcc may emit calls to memcpy, memset,
 * memmove and memcmp on its own (struct copies, zeroing), so the SDK must provide them.
 */
#ifndef HV_STRING_H
#define HV_STRING_H

#include <stddef.h>

void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
size_t strnlen(const char *s, size_t max);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
/* Copies at most size-1 bytes and always terminates (if size > 0); returns strlen(src). */
size_t hv_strlcpy(char *dst, const char *src, size_t size);

#endif
