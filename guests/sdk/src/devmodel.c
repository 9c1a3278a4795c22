/* devmodel.c: the device-model request loop (see devmodel.h). */
#include "hvdk.h"

long hv_dm_attach(struct hv_dm_device *dev)
{
    const struct hv_boot_info *boot = hv_boot;
    unsigned count = boot->device_count < HV_MAX_DEVICES ? boot->device_count : HV_MAX_DEVICES;
    for (unsigned i = 0; i < count; i++) {
        const struct hv_device_info *d = &boot->devices[i];
        if (d->is_model && strncmp(d->name, dev->name, HV_NAME_LEN) == 0) {
            dev->info = d;
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

/* Runs the register handler for `req`; returns the reply's status, its value in *value. */
static long dm_answer(struct hv_dm_device *dev, const struct hv_dm_request *req, uint64_t *value)
{
    const struct hv_dm_reg *reg = dev->regs;
    while (reg && reg->name && reg->offset != req->offset)
        reg++;
    dev->requests++;
    *value = 0;

    if (!reg || !reg->name) {
        if (dev->verbose)
            hv_printf("dm: %s %s unknown offset 0x%lx size %u\n", dev->name,
                      req->is_write ? "write" : "read", req->offset, req->size);
        return HV_EINVAL;
    }
    if (req->is_write) {
        uint64_t written = req->value & size_mask(req->size);
        if (reg->write)
            reg->write(dev->ctx, reg, req, written);
        if (dev->verbose)
            hv_printf("dm: %s write %s = 0x%lx\n", dev->name, reg->name, written);
        return 0;
    }
    if (reg->read)
        *value = reg->read(dev->ctx, reg, req) & size_mask(req->size);
    if (dev->verbose)
        hv_printf("dm: %s read %s = 0x%lx\n", dev->name, reg->name, *value);
    return 0;
}

void hv_dm_handle(struct hv_dm_device *dev, const struct hv_dm_request *req)
{
    uint64_t value;
    long status = dm_answer(dev, req, &value);
    hv_dm_reply(req->id, value, status);
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
    hv_irq_enable_cpu(); /* interrupts due while waiting are taken between two calls */
    struct hv_dm_request req;
    uint64_t answer_id = 0, value = 0;
    long status = 0;
    for (;;) {
        ret = hv_dm_reply_wait(answer_id, value, status, &req);
        /* HV_ENOENT after an answer: its client no longer waits (it timed out); go on. */
        if (ret < 0 && !(ret == HV_ENOENT && answer_id != 0))
            return ret;
        answer_id = 0;
        if (ret == 1) {
            status = dm_answer(dev, &req, &value);
            answer_id = req.id;
        }
    }
}
