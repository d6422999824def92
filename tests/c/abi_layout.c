/*
 * ABI layout probe for tests/tests/abi_layout/.
 *
 * Compiled against Debian's real headers (libxen-dev for Xen's public headers,
 * linux-libc-dev for the Linux uapi <xen/privcmd.h>/<xen/evtchn.h>), it prints
 * the size, alignment and field offsets/sizes of every structure and the value
 * of every constant that xen-abi/src mirrors, one "key value" per
 * line (the value is the last word). The Rust test compares them with the Rust
 * definitions.
 *
 * Built twice: by default with the Linux uapi privcmd.h/evtchn.h (through the
 * shim in tests/c/include for <xen/interface/xen.h>), and with
 * -DUSE_XEN_SYS_HEADERS with libxen-dev's own copies <xen/sys/privcmd.h> and
 * <xen/sys/evtchn.h> (what libxencall/libxendevicemodel are built with), so
 * the test can check that both agree.
 *
 * Needs -D__XEN_TOOLS__ (hvm_op.h's HVM_IOREQSRV_* and the tools-only parts
 * of memory.h are hidden without it).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include <xen/xen.h>
#include <xen/sched.h>
#include <xen/memory.h>
#include <xen/hvm/hvm_op.h>
#include <xen/hvm/ioreq.h>
#include <xen/hvm/dm_op.h>
#include <xen/domctl.h>
#include <xen/physdev.h>
#include <xen/version.h>
#include <xenctrl.h> /* XC_PAGE_SIZE: no public Xen header names the x86 page size */

#ifdef USE_XEN_SYS_HEADERS
#include <xen/sys/privcmd.h>
#include <xen/sys/evtchn.h>
#define HEADERS "libxen-dev:xen/sys/privcmd.h+xen/sys/evtchn.h"
#else
#include <xen/privcmd.h>
#include <xen/evtchn.h>
#define HEADERS "linux-libc-dev:xen/privcmd.h+xen/evtchn.h"
#endif

#define STRUCT(T)                                                              \
    printf("sizeof %s %zu\nalignof %s %zu\n", #T, sizeof(struct T), #T,        \
           _Alignof(struct T))
#define FIELD(T, F)                                                            \
    printf("offset %s %s %zu\nfieldsize %s %s %zu\n", #T, #F,                  \
           offsetof(struct T, F), #T, #F, sizeof(((struct T *)0)->F))
#define TYPE(T) printf("sizeof %s %zu\n", #T, sizeof(T))
#define CONST(N) printf("const %s %llu\n", #N, (unsigned long long)(N))
#define SAMPLE(E) printf("sample %s %llu\n", #E, (unsigned long long)(E))

static void hex(const char *key, const void *p, size_t n)
{
    const unsigned char *b = p;
    printf("bytes %s ", key);
    for (size_t i = 0; i < n; i++)
        printf("%02x", b[i]);
    printf("\n");
}

/* Bit-field members have no offsetof: set one to all-ones in a zeroed struct
 * and print the struct's bytes. ~v.F is not a constant, so no -Woverflow. */
#define BITS(T, F, acc)                                                        \
    do {                                                                       \
        struct T v;                                                            \
        memset(&v, 0, sizeof(v));                                              \
        v.F = ~v.F;                                                            \
        hex(#T "." #F, &v, sizeof(v));                                         \
        for (size_t i = 0; i < sizeof(v); i++)                                 \
            acc[i] |= ((unsigned char *)&v)[i];                                \
    } while (0)

/* Offset and size of the bytes touched by a group of bit-fields. */
static void span(const char *t, const char *group, const unsigned char *acc,
                 size_t n)
{
    size_t lo = n, hi = 0;
    for (size_t i = 0; i < n; i++)
        if (acc[i]) {
            if (lo == n)
                lo = i;
            hi = i;
        }
    printf("offset %s %s %zu\nfieldsize %s %s %zu\n", t, group, lo, t, group,
           hi - lo + 1);
}

int main(void)
{
    printf("headers " HEADERS "\n");

    /* xen/include/public/xen.h */
    TYPE(domid_t);
    TYPE(ioservid_t);
    TYPE(evtchn_port_t);
    CONST(__HYPERVISOR_memory_op);
    CONST(__HYPERVISOR_sched_op);
    CONST(__HYPERVISOR_physdev_op);
    CONST(__HYPERVISOR_domctl);
    CONST(__HYPERVISOR_dm_op);
    CONST(DOMID_SELF);
    CONST(DOMID_IO);
    CONST(DOMID_INVALID);
    CONST(XC_PAGE_SIZE);

    /* xen/include/public/hvm/ioreq.h */
    CONST(IOREQ_READ);
    CONST(IOREQ_WRITE);
    CONST(STATE_IOREQ_NONE);
    CONST(STATE_IOREQ_READY);
    CONST(STATE_IOREQ_INPROCESS);
    CONST(STATE_IORESP_READY);
    CONST(IOREQ_TYPE_PIO);
    CONST(IOREQ_TYPE_COPY);
    CONST(IOREQ_TYPE_PCI_CONFIG);
    CONST(IOREQ_TYPE_TIMEOFFSET);
    CONST(IOREQ_TYPE_INVALIDATE);
    CONST(IOREQ_BUFFER_SLOT_NUM);
    CONST(ACPI_PM1A_EVT_BLK_ADDRESS_V1);
    CONST(ACPI_PM1A_CNT_BLK_ADDRESS_V1);

    STRUCT(ioreq);
    FIELD(ioreq, addr);
    FIELD(ioreq, data);
    FIELD(ioreq, count);
    FIELD(ioreq, size);
    FIELD(ioreq, vp_eport);
    FIELD(ioreq, _pad0);
    FIELD(ioreq, type);
    {
        unsigned char acc[sizeof(struct ioreq)] = {0};
        BITS(ioreq, state, acc);
        BITS(ioreq, data_is_ptr, acc);
        BITS(ioreq, dir, acc);
        BITS(ioreq, df, acc);
        BITS(ioreq, _pad1, acc);
        span("ioreq", "{state,data_is_ptr,dir,df,_pad1}", acc, sizeof(acc));
    }

    STRUCT(buf_ioreq);
    FIELD(buf_ioreq, data);
    /* The same steps as ioreq's bitfields above, spelled out again on purpose:
     * one line per member, as in the header. */
    {
        unsigned char acc[sizeof(struct buf_ioreq)] = {0};
        BITS(buf_ioreq, type, acc); /* a plain uint8_t, part of word 0 */
        BITS(buf_ioreq, pad, acc);
        BITS(buf_ioreq, dir, acc);
        BITS(buf_ioreq, size, acc);
        BITS(buf_ioreq, addr, acc);
        span("buf_ioreq", "{type,pad,dir,size,addr}", acc, sizeof(acc));
    }

    STRUCT(buffered_iopage);
    /* Outside __XEN__ the two pointers are plain members (Xen itself wraps them
     * in a union with a uint64_t for its 64-bit cmpxchg). */
    FIELD(buffered_iopage, read_pointer);
    FIELD(buffered_iopage, write_pointer);
    FIELD(buffered_iopage, buf_ioreq);

    /* xen/include/public/hvm/hvm_op.h */
    CONST(HVM_IOREQSRV_BUFIOREQ_OFF);
    CONST(HVM_IOREQSRV_BUFIOREQ_LEGACY);
    CONST(HVM_IOREQSRV_BUFIOREQ_ATOMIC);

    /* xen/include/public/hvm/dm_op.h */
    CONST(XEN_DMOP_create_ioreq_server);
    CONST(XEN_DMOP_get_ioreq_server_info);
    CONST(XEN_DMOP_map_io_range_to_ioreq_server);
    CONST(XEN_DMOP_unmap_io_range_from_ioreq_server);
    CONST(XEN_DMOP_set_ioreq_server_state);
    CONST(XEN_DMOP_destroy_ioreq_server);
    CONST(XEN_DMOP_set_pci_intx_level);
    CONST(XEN_DMOP_set_isa_irq_level);
    CONST(XEN_DMOP_inject_msi);
    CONST(XEN_DMOP_remote_shutdown);
    CONST(XEN_DMOP_nr_vcpus);
    CONST(XEN_DMOP_IO_RANGE_PORT);
    CONST(XEN_DMOP_IO_RANGE_MEMORY);
    CONST(XEN_DMOP_IO_RANGE_PCI);
    CONST(XEN_DMOP_no_gfns);
    /* Arguments cast to uint64_t as libxendevicemodel does: with plain ints a
     * segment >= 0x8000 overflows int and sign-extends. */
#define SBDF(s, b, d, f)                                                       \
    XEN_DMOP_PCI_SBDF((uint64_t)(s), (uint64_t)(b), (uint64_t)(d), (uint64_t)(f))
    SAMPLE(SBDF(0, 0, 3, 0));
    SAMPLE(SBDF(0x1234, 0xab, 0x1f, 7));
    SAMPLE(SBDF(0xffff, 0xff, 0x3f, 0xf)); /* the macro masks dev and fn */
    /* Hypervisor-internal limits: not in the public headers (checked here so a
     * future header that exposes them gets compared). */
#ifdef MAX_NR_IOREQ_SERVERS
    CONST(MAX_NR_IOREQ_SERVERS);
#endif
#ifdef MAX_NR_IO_RANGES
    CONST(MAX_NR_IO_RANGES);
#endif

    STRUCT(xen_dm_op_create_ioreq_server);
    FIELD(xen_dm_op_create_ioreq_server, handle_bufioreq);
    FIELD(xen_dm_op_create_ioreq_server, pad);
    FIELD(xen_dm_op_create_ioreq_server, id);
    STRUCT(xen_dm_op_get_ioreq_server_info);
    FIELD(xen_dm_op_get_ioreq_server_info, id);
    FIELD(xen_dm_op_get_ioreq_server_info, flags);
    FIELD(xen_dm_op_get_ioreq_server_info, bufioreq_port);
    FIELD(xen_dm_op_get_ioreq_server_info, ioreq_gfn);
    FIELD(xen_dm_op_get_ioreq_server_info, bufioreq_gfn);
    STRUCT(xen_dm_op_ioreq_server_range);
    FIELD(xen_dm_op_ioreq_server_range, id);
    FIELD(xen_dm_op_ioreq_server_range, pad);
    FIELD(xen_dm_op_ioreq_server_range, type);
    FIELD(xen_dm_op_ioreq_server_range, start);
    FIELD(xen_dm_op_ioreq_server_range, end);
    STRUCT(xen_dm_op_set_ioreq_server_state);
    FIELD(xen_dm_op_set_ioreq_server_state, id);
    FIELD(xen_dm_op_set_ioreq_server_state, enabled);
    FIELD(xen_dm_op_set_ioreq_server_state, pad);
    STRUCT(xen_dm_op_destroy_ioreq_server);
    FIELD(xen_dm_op_destroy_ioreq_server, id);
    FIELD(xen_dm_op_destroy_ioreq_server, pad);
    STRUCT(xen_dm_op_set_pci_intx_level);
    FIELD(xen_dm_op_set_pci_intx_level, domain);
    FIELD(xen_dm_op_set_pci_intx_level, bus);
    FIELD(xen_dm_op_set_pci_intx_level, device);
    FIELD(xen_dm_op_set_pci_intx_level, intx);
    FIELD(xen_dm_op_set_pci_intx_level, level);
    STRUCT(xen_dm_op_set_isa_irq_level);
    FIELD(xen_dm_op_set_isa_irq_level, isa_irq);
    FIELD(xen_dm_op_set_isa_irq_level, level);
    /* domctl.h / physdev.h: passthrough (Xen 4.17) */
    STRUCT(xen_domctl);
    FIELD(xen_domctl, cmd);
    FIELD(xen_domctl, interface_version);
    FIELD(xen_domctl, domain);
    FIELD(xen_domctl, _pad);
    FIELD(xen_domctl, u);
    STRUCT(xen_domctl_memory_mapping);
    FIELD(xen_domctl_memory_mapping, first_gfn);
    FIELD(xen_domctl_memory_mapping, first_mfn);
    FIELD(xen_domctl_memory_mapping, nr_mfns);
    FIELD(xen_domctl_memory_mapping, add_mapping);
    FIELD(xen_domctl_memory_mapping, padding);
    STRUCT(xen_domctl_ioport_mapping);
    FIELD(xen_domctl_ioport_mapping, first_gport);
    FIELD(xen_domctl_ioport_mapping, first_mport);
    FIELD(xen_domctl_ioport_mapping, nr_ports);
    FIELD(xen_domctl_ioport_mapping, add_mapping);
    STRUCT(xen_domctl_iomem_permission);
    FIELD(xen_domctl_iomem_permission, first_mfn);
    FIELD(xen_domctl_iomem_permission, nr_mfns);
    FIELD(xen_domctl_iomem_permission, allow_access);
    STRUCT(xen_domctl_ioport_permission);
    FIELD(xen_domctl_ioport_permission, first_port);
    FIELD(xen_domctl_ioport_permission, nr_ports);
    FIELD(xen_domctl_ioport_permission, allow_access);
    STRUCT(xen_domctl_irq_permission);
    FIELD(xen_domctl_irq_permission, pirq);
    FIELD(xen_domctl_irq_permission, allow_access);
    FIELD(xen_domctl_irq_permission, pad);
    STRUCT(xen_domctl_assign_device);
    FIELD(xen_domctl_assign_device, dev);
    FIELD(xen_domctl_assign_device, flags);
    FIELD(xen_domctl_assign_device, u);
    printf("offset xen_domctl_assign_device u.pci.machine_sbdf %zu\n",
           offsetof(struct xen_domctl_assign_device, u.pci.machine_sbdf));
    STRUCT(xen_domctl_bind_pt_irq);
    FIELD(xen_domctl_bind_pt_irq, machine_irq);
    FIELD(xen_domctl_bind_pt_irq, irq_type);
    FIELD(xen_domctl_bind_pt_irq, u.msi.gvec);
    FIELD(xen_domctl_bind_pt_irq, u.msi.gflags);
    FIELD(xen_domctl_bind_pt_irq, u.msi.gtable);
    STRUCT(physdev_map_pirq);
    FIELD(physdev_map_pirq, domid);
    FIELD(physdev_map_pirq, type);
    FIELD(physdev_map_pirq, index);
    FIELD(physdev_map_pirq, pirq);
    FIELD(physdev_map_pirq, bus);
    FIELD(physdev_map_pirq, devfn);
    FIELD(physdev_map_pirq, entry_nr);
    FIELD(physdev_map_pirq, table_base);
    STRUCT(physdev_unmap_pirq);
    FIELD(physdev_unmap_pirq, domid);
    FIELD(physdev_unmap_pirq, pirq);
    /* Built / read as bytes by xen-abi/src/passthrough.rs (no struct in
     * xen-abi, so no alignof): the argument of PHYSDEVOP_prepare_msix and
     * release_msix, and the getdomaininfo fields the Rust side reads. */
    printf("sizeof physdev_pci_device %zu\n", sizeof(struct physdev_pci_device));
    printf("offset physdev_pci_device seg %zu\nfieldsize physdev_pci_device seg %zu\n",
           offsetof(struct physdev_pci_device, seg),
           sizeof(((struct physdev_pci_device *)0)->seg));
    printf("offset physdev_pci_device bus %zu\nfieldsize physdev_pci_device bus %zu\n",
           offsetof(struct physdev_pci_device, bus),
           sizeof(((struct physdev_pci_device *)0)->bus));
    printf("offset physdev_pci_device devfn %zu\nfieldsize physdev_pci_device devfn %zu\n",
           offsetof(struct physdev_pci_device, devfn),
           sizeof(((struct physdev_pci_device *)0)->devfn));
    FIELD(xen_domctl_getdomaininfo, domain);
    FIELD(xen_domctl_getdomaininfo, flags);
    FIELD(xen_domctl_getdomaininfo, tot_pages);
    FIELD(xen_domctl_getdomaininfo, max_pages);
    CONST(__HYPERVISOR_xen_version);
    CONST(XENVER_version);
    CONST(XEN_DOMCTL_INTERFACE_VERSION);
    CONST(XEN_DOMCTL_getdomaininfo);
    CONST(XEN_DOMINF_dying);
    CONST(XEN_DOMCTL_irq_permission);
    CONST(XEN_DOMCTL_iomem_permission);
    CONST(XEN_DOMCTL_ioport_permission);
    CONST(XEN_DOMCTL_assign_device);
    CONST(XEN_DOMCTL_bind_pt_irq);
    CONST(XEN_DOMCTL_memory_mapping);
    CONST(XEN_DOMCTL_ioport_mapping);
    CONST(XEN_DOMCTL_deassign_device);
    CONST(XEN_DOMCTL_unbind_pt_irq);
    CONST(XEN_DOMCTL_test_assign_device);
    CONST(XEN_DOMCTL_DEV_PCI);
    CONST(PT_IRQ_TYPE_PCI);
    CONST(PT_IRQ_TYPE_MSI);
    CONST(XEN_DOMCTL_VMSI_X86_DEST_ID_MASK);
    CONST(XEN_DOMCTL_VMSI_X86_RH_MASK);
    CONST(XEN_DOMCTL_VMSI_X86_DM_MASK);
    CONST(XEN_DOMCTL_VMSI_X86_DELIV_MASK);
    CONST(XEN_DOMCTL_VMSI_X86_TRIG_MASK);
    CONST(XEN_DOMCTL_VMSI_X86_UNMASKED);
    CONST(PHYSDEVOP_map_pirq);
    CONST(PHYSDEVOP_unmap_pirq);
    CONST(PHYSDEVOP_prepare_msix);
    CONST(PHYSDEVOP_release_msix);
    CONST(MAP_PIRQ_TYPE_MSI);
    CONST(MAP_PIRQ_TYPE_GSI);
    CONST(MAP_PIRQ_TYPE_MSI_SEG);
    CONST(MAP_PIRQ_TYPE_MULTI_MSI);
    STRUCT(xen_dm_op_inject_msi);
    FIELD(xen_dm_op_inject_msi, data);
    FIELD(xen_dm_op_inject_msi, pad);
    FIELD(xen_dm_op_inject_msi, addr);
    STRUCT(xen_dm_op_remote_shutdown);
    FIELD(xen_dm_op_remote_shutdown, reason);
    STRUCT(xen_dm_op_nr_vcpus);
    FIELD(xen_dm_op_nr_vcpus, vcpus);
    STRUCT(xen_dm_op);
    FIELD(xen_dm_op, op);
    FIELD(xen_dm_op, pad);
    FIELD(xen_dm_op, u);
    STRUCT(xen_dm_op_buf);
    FIELD(xen_dm_op_buf, h);
    FIELD(xen_dm_op_buf, size);

    /* xen/include/public/sched.h */
    CONST(SHUTDOWN_poweroff);
    CONST(SHUTDOWN_reboot);
    CONST(SHUTDOWN_suspend);
    CONST(SHUTDOWN_crash);
    CONST(SHUTDOWN_watchdog);
    CONST(SHUTDOWN_soft_reset);

    /* xen/include/public/memory.h */
    CONST(XENMEM_acquire_resource);
    CONST(XENMEM_resource_ioreq_server);
    CONST(XENMEM_resource_grant_table);
    CONST(XENMEM_resource_ioreq_server_frame_bufioreq);
    SAMPLE(XENMEM_resource_ioreq_server_frame_ioreq(0));
    SAMPLE(XENMEM_resource_ioreq_server_frame_ioreq(1));
    SAMPLE(XENMEM_resource_ioreq_server_frame_ioreq(7));

    /* Linux include/uapi/xen/privcmd.h */
    STRUCT(privcmd_hypercall);
    FIELD(privcmd_hypercall, op);
    FIELD(privcmd_hypercall, arg);
    STRUCT(privcmd_dm_op_buf);
    FIELD(privcmd_dm_op_buf, uptr);
    FIELD(privcmd_dm_op_buf, size);
    STRUCT(privcmd_dm_op);
    FIELD(privcmd_dm_op, dom);
    FIELD(privcmd_dm_op, num);
    FIELD(privcmd_dm_op, ubufs);
    STRUCT(privcmd_mmapbatch_v2);
    FIELD(privcmd_mmapbatch_v2, num);
    FIELD(privcmd_mmapbatch_v2, dom);
    FIELD(privcmd_mmapbatch_v2, addr);
    FIELD(privcmd_mmapbatch_v2, arr);
    FIELD(privcmd_mmapbatch_v2, err);
    STRUCT(privcmd_mmap_resource);
    FIELD(privcmd_mmap_resource, dom);
    FIELD(privcmd_mmap_resource, type);
    FIELD(privcmd_mmap_resource, id);
    FIELD(privcmd_mmap_resource, idx);
    FIELD(privcmd_mmap_resource, num);
    FIELD(privcmd_mmap_resource, addr);
    CONST(IOCTL_PRIVCMD_HYPERCALL);
    CONST(IOCTL_PRIVCMD_MMAPBATCH_V2);
    CONST(IOCTL_PRIVCMD_DM_OP);
    CONST(IOCTL_PRIVCMD_RESTRICT);
    CONST(IOCTL_PRIVCMD_MMAP_RESOURCE);
    SAMPLE(_IOC(_IOC_NONE, 'P', 5, 16));
    SAMPLE(_IOC(_IOC_WRITE, 'P', 8, 24));
    SAMPLE(_IOC(_IOC_READ, 'E', 0x7f, 0x3fff));
    SAMPLE(_IOC(_IOC_READ | _IOC_WRITE, 0xff, 0xff, 0x3fff));

    /* Linux include/uapi/xen/evtchn.h */
    STRUCT(ioctl_evtchn_bind_interdomain);
    FIELD(ioctl_evtchn_bind_interdomain, remote_domain);
    FIELD(ioctl_evtchn_bind_interdomain, remote_port);
    STRUCT(ioctl_evtchn_bind_unbound_port);
    FIELD(ioctl_evtchn_bind_unbound_port, remote_domain);
    STRUCT(ioctl_evtchn_unbind);
    FIELD(ioctl_evtchn_unbind, port);
    STRUCT(ioctl_evtchn_notify);
    FIELD(ioctl_evtchn_notify, port);
    STRUCT(ioctl_evtchn_restrict_domid);
    FIELD(ioctl_evtchn_restrict_domid, domid);
    CONST(IOCTL_EVTCHN_BIND_INTERDOMAIN);
    CONST(IOCTL_EVTCHN_BIND_UNBOUND_PORT);
    CONST(IOCTL_EVTCHN_UNBIND);
    CONST(IOCTL_EVTCHN_NOTIFY);
    CONST(IOCTL_EVTCHN_RESET);
    CONST(IOCTL_EVTCHN_RESTRICT_DOMID);

    return 0;
}
