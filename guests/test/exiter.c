/* exiter: test guest, 1 vCPU. Prints 40 numbered lines and a last line without a newline
 * (straight through HV_CONSOLE_WRITE), then exits at once with the code its partition's name
 * ends in after a '-' ("exiter-7" exits with 7; no number: 0). For the tests of how `hv run`
 * ends: every line printed just before an exit must reach the host.
 *
 * Output:
 *   exiter: line <i> of 40             (i = 1..40)
 *   exiter: exit <code>                (no newline)
 */
#include "hvdk.h"

#define LINES 40

static long exit_code(const char *name)
{
    const char *dash = 0;
    for (const char *p = name; *p && p < name + HV_NAME_LEN; p++)
        if (*p == '-')
            dash = p;
    if (!dash)
        return 0;
    long code = 0;
    for (const char *p = dash + 1; *p >= '0' && *p <= '9' && p < name + HV_NAME_LEN; p++)
        code = code * 10 + (*p - '0');
    return code;
}

void hv_main(const struct hv_boot_info *boot, unsigned vcpu)
{
    if (vcpu != 0)
        hv_park();
    long code = exit_code(boot->name);
    for (unsigned i = 1; i <= LINES; i++)
        hv_printf("exiter: line %u of %u\n", i, LINES);
    char last[32];
    int len = hv_snprintf(last, sizeof last, "exiter: exit %ld", code);
    hv_console_write(last, (size_t)len);
    hv_exit(code);
}
