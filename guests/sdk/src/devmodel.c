/* devmodel.c: the device-model request loop (see devmodel.h). */
#include "hvdk.h"

static volatile unsigned long dm_doorbells;

static void dm_doorbell(unsigned vector, struct hv_irq_frame *frame)
{
    (void)vector;
    (void)frame;
    __atomic_fetch_add(&dm_doorbells, 1, __ATOMIC_RELAXED);
}

long hv_dm_attach(struct hv_dm_device *dev)
{
    const struct hv_boot_info *boot = hv_boot;
    unsigned count = boot->device_count < HV_MAX_DEVICES ? boot->device_count : HV_MAX_DEVICES;
    for (unsigned i = 0; i < count; i++) {
        const struct hv_device_info *d = &boot->devices[i];
        if (d->is_model && strncmp(d->name, dev->name, HV_NAME_LEN) == 0) {
            dev->info = d;
            if (d->vector >= HV_FIRST_VECTOR)
                return hv_irq_register(d->vector, dm_doorbell);
            return 0;
        }
    }
    return HV_ENOENT;
}

uint64_t hv_dm_read_const(void *ctx, const struct hv_dm_reg *reg, const struct hv_dm_request *req)
{
    (void)ctx;
    (void)req;
    return reg->arg;
}

static uint64_t size_mask(uint32_t size)
{
    return size >= 8 ? ~0ull : (1ull << (size * 8)) - 1;
}

void hv_dm_handle(struct hv_dm_device *dev, const struct hv_dm_request *req)
{
    const struct hv_dm_reg *reg = dev->regs;
    while (reg && reg->name && reg->offset != req->offset)
        reg++;
    dev->requests++;

    if (!reg || !reg->name) {
        if (dev->verbose)
            hv_printf("dm: %s %s unknown offset 0x%lx size %u\n", dev->name,
                      req->is_write ? "write" : "read", req->offset, req->size);
        hv_dm_reply(req->id, 0, HV_EINVAL);
        return;
    }
    uint64_t value = 0;
    if (req->is_write) {
        value = req->value & size_mask(req->size);
        if (reg->write)
            reg->write(dev->ctx, reg, req, value);
    } else if (reg->read) {
        value = reg->read(dev->ctx, reg, req) & size_mask(req->size);
    }
    if (dev->verbose)
        hv_printf("dm: %s %s %s = 0x%lx\n", dev->name, req->is_write ? "write" : "read",
                  reg->name, value);
    hv_dm_reply(req->id, req->is_write ? 0 : value, 0);
}

long hv_dm_poll(struct hv_dm_device *dev)
{
    struct hv_dm_request req;
    long handled = 0;
    for (;;) {
        long ret = hv_dm_receive(&req);
        if (ret < 0)
            return ret;
        if (ret == 0)
            return handled;
        hv_dm_handle(dev, &req);
        handled++;
    }
}

long hv_dm_serve(struct hv_dm_device *dev)
{
    long ret = hv_dm_attach(dev);
    if (ret < 0)
        return ret;
    for (;;) {
        if (dev->info->vector < HV_FIRST_VECTOR) {
            /* no doorbell configured: poll */
            ret = hv_dm_poll(dev);
            if (ret < 0)
                return ret;
            if (ret == 0)
                hv_yield();
            continue;
        }
        unsigned long seen = __atomic_load_n(&dm_doorbells, __ATOMIC_RELAXED);
        ret = hv_dm_poll(dev);
        if (ret < 0)
            return ret;
        hv_irq_disable_cpu();
        if (__atomic_load_n(&dm_doorbells, __ATOMIC_RELAXED) == seen)
            hv_wait_for_interrupt();
        else
            hv_irq_enable_cpu();
    }
}
