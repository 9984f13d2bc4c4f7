/* SPDX-License-Identifier: MIT */
/*
 * Kernel UAPI that Debian 12's linux-libc-dev (6.1 headers) lacks but that
 * the dirty tracker uses at run time on newer kernels:
 *  - userfaultfd features UFFD_FEATURE_WP_UNPOPULATED (Linux 6.4) and
 *    UFFD_FEATURE_WP_ASYNC (Linux 6.7);
 *  - the PAGEMAP_SCAN ioctl on /proc/<pid>/pagemap (Linux 6.7): its argument
 *    and output structures and the PAGE_IS_* / PM_SCAN_* bits.
 *
 * Building against old headers must not decide what the binary can do: the
 * tracker probes the running kernel (see dirty.c) and falls back to explicit
 * logging when it says no. Values are copied from the kernel's
 * include/uapi/linux/userfaultfd.h and include/uapi/linux/fs.h and must stay
 * identical. The system headers are included first and every item is
 * guarded, so newer headers win; delete this file once the build baseline
 * ships 6.7+ headers.
 */
#ifndef FERRY_DIRTY_UFFD_COMPAT_H
#define FERRY_DIRTY_UFFD_COMPAT_H

#include <linux/fs.h>
#include <linux/ioctl.h>
#include <linux/types.h>
#include <linux/userfaultfd.h>

/* include/uapi/linux/userfaultfd.h */
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif

/*
 * include/uapi/linux/fs.h. The structures come with PAGEMAP_SCAN in the same
 * header version, so its presence decides whether they are declared here.
 */
#ifndef PAGEMAP_SCAN
struct page_region {
	__u64 start;      /* first byte of the region */
	__u64 end;        /* one past its last byte */
	__u64 categories; /* PAGE_IS_* bits, limited to return_mask */
};

struct pm_scan_arg {
	__u64 size;     /* sizeof(struct pm_scan_arg) */
	__u64 flags;    /* PM_SCAN_* */
	__u64 start;    /* range to walk, page aligned */
	__u64 end;
	__u64 walk_end; /* out: where the walk stopped */
	__u64 vec;      /* struct page_region array (user pointer) */
	__u64 vec_len;  /* its length in entries */
	__u64 max_pages; /* 0 = no limit */
	__u64 category_inverted;
	__u64 category_mask;
	__u64 category_anyof_mask;
	__u64 return_mask;
};

#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif

#ifndef PM_SCAN_WP_MATCHING
#define PM_SCAN_WP_MATCHING (1 << 0)   /* write-protect the pages matched */
#endif
#ifndef PM_SCAN_CHECK_WPASYNC
#define PM_SCAN_CHECK_WPASYNC (1 << 1) /* fail on a VMA not in WP-async mode */
#endif

#ifndef PAGE_IS_WPALLOWED
#define PAGE_IS_WPALLOWED (1 << 0)
#endif
#ifndef PAGE_IS_WRITTEN
#define PAGE_IS_WRITTEN (1 << 1)
#endif
#ifndef PAGE_IS_FILE
#define PAGE_IS_FILE (1 << 2)
#endif
#ifndef PAGE_IS_PRESENT
#define PAGE_IS_PRESENT (1 << 3)
#endif
#ifndef PAGE_IS_SWAPPED
#define PAGE_IS_SWAPPED (1 << 4)
#endif
#ifndef PAGE_IS_PFNZERO
#define PAGE_IS_PFNZERO (1 << 5)
#endif
#ifndef PAGE_IS_HUGE
#define PAGE_IS_HUGE (1 << 6)
#endif
#ifndef PAGE_IS_SOFT_DIRTY
#define PAGE_IS_SOFT_DIRTY (1 << 7)
#endif

#endif /* FERRY_DIRTY_UFFD_COMPAT_H */
