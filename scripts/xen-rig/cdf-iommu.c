/*
 * cdf-iommu.so: an LD_PRELOAD wrapper of libxenctrl's xc_domain_create (symbol version
 * VERS_4.17.0) for the rig's passthrough guests.
 *
 * Why: a passed-through device needs the domain to have an IOMMU context
 * (XEN_DOMCTL_CDF_iommu in the createdomain flags); without it Xen's assign_device returns
 * EOPNOTSUPP (xen/drivers/passthrough/iommu.c:621 in 4.17) and bind_pt_irq ESRCH. libxl
 * sets the flag only for a guest whose passthrough mode is not "disabled", and it refuses
 * every passthrough mode for x86 PVH ("passthrough not yet supported for x86 PVH guests",
 * tools/libs/light/libxl_x86.c:829-835 in 4.17; the same hunk is in 4.18-4.21). libxl's
 * `pci = [...]` would take the PV pciback/pcifront path, which this project replaces. So the
 * rig creates the domain with unmodified xl and this wrapper: when PVH_DM_IOMMU=1 is in the
 * environment and the domain is an HVM container (PVH or HVM), it ORs in XEN_DOMCTL_CDF_iommu
 * and says so with one line on stderr. Debian's libxenlight calls xc_domain_create exactly once
 * per domain, through the PLT, so the preload sees it.
 *
 * Built on the host against its libxen-dev 4.17 headers:
 *   gcc -O2 -shared -fPIC -Wl,--version-script=cdf-iommu.map -o cdf-iommu.so cdf-iommu.c -ldl
 * and used in dom0 as  PVH_DM_IOMMU=1 LD_PRELOAD=/usr/local/lib/cdf-iommu.so xl create -p ...
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xenctrl.h>

#if XEN_DOMCTL_INTERFACE_VERSION != 0x15
#error "built for Xen 4.17's domctl interface (0x15); check the createdomain layout first"
#endif

typedef int (*create_fn)(xc_interface *, uint32_t *, struct xen_domctl_createdomain *);

int xc_domain_create(xc_interface *xch, uint32_t *pdomid, struct xen_domctl_createdomain *config)
{
    static create_fn real;
    if (!real)
        real = (create_fn)dlvsym(RTLD_NEXT, "xc_domain_create", "VERS_4.17.0");
    if (!real) {
        fprintf(stderr, "cdf-iommu: cannot find xc_domain_create@VERS_4.17.0: %s\n", dlerror());
        return -1;
    }
    const char *e = getenv("PVH_DM_IOMMU");
    if (e && strcmp(e, "1") == 0) {
        if (config->flags & XEN_DOMCTL_CDF_hvm) {
            config->flags |= XEN_DOMCTL_CDF_iommu;
            fprintf(stderr, "cdf-iommu: PVH_DM_IOMMU=1: added XEN_DOMCTL_CDF_iommu, createdomain flags %#x iommu_opts %#x\n",
                    config->flags, config->iommu_opts);
        } else {
            fprintf(stderr, "cdf-iommu: PVH_DM_IOMMU=1 but flags %#x is not an HVM container: left unchanged\n",
                    config->flags);
        }
    }
    return real(xch, pdomid, config);
}
