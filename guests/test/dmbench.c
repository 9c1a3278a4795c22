/* dmbench: test guest for the device-model benchmark, 1 vCPU. Times ROUNDS reads of the sensor's
 * ID register (served by a device-model partition) and ROUNDS reads of the UART's line-status
 * register (a built-in device of the hypervisor), with HV_TIME_NS, and prints
 *   dmbench: model <ns> ns, builtin <ns> ns per access (<rounds> rounds)
 * then exits with 0 (or prints "dmbench: no sensor" and exits with 1).
 */
#include "hvdk.h"
#include "../demo/sensor.h"

#define ROUNDS 2000

void hv_main(const struct hv_boot_info *boot, unsigned vcpu)
{
    if (vcpu != 0)
        hv_park();
    const struct hv_device_info *dev = NULL;
    for (unsigned i = 0; i < boot->device_count && i < HV_MAX_DEVICES; i++)
        if (!boot->devices[i].is_model && strcmp(boot->devices[i].name, SENSOR_DEVICE) == 0)
            dev = &boot->devices[i];
    if (!dev) {
        hv_printf("dmbench: no sensor\n");
        hv_exit(1);
    }
    uint64_t t0 = (uint64_t)hv_time_ns();
    uint32_t sum = 0;
    for (unsigned i = 0; i < ROUNDS; i++)
        sum += sensor_mmio_read32(dev->mmio_base + SENSOR_REG_ID);
    uint64_t t1 = (uint64_t)hv_time_ns();
    for (unsigned i = 0; i < ROUNDS; i++)
        sum += hv_inb(HV_UART_PORT + 5);
    uint64_t t2 = (uint64_t)hv_time_ns();
    hv_printf("dmbench: model %lu ns, builtin %lu ns per access (%u rounds, check %u)\n",
              (unsigned long)((t1 - t0) / ROUNDS), (unsigned long)((t2 - t1) / ROUNDS), ROUNDS,
              sum & 1);
    hv_exit(0);
}
