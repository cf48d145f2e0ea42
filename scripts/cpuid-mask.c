// Shows a process an older x86 CPU than the one it runs on: an LD_PRELOAD
// library that hides AVX-512, VNNI and AMX from the `cpuid` instruction, so
// every engine in the process (ours and ONNX Runtime's MLAS alike) picks the
// kernels it would pick on that CPU. This is how scripts/cpu-bench.sh compares
// both engines as on an AVX2-only or an AVX-VNNI (N100-class) box from an
// AVX-512 server; DLA_ISA caps only our kernels.
//
// How: Linux's CPUID faulting (arch_prctl ARCH_SET_CPUID, `cpuid_fault` in
// /proc/cpuinfo) turns each `cpuid` into a SIGSEGV; the handler runs the
// real instruction, clears the hidden feature bits and steps over it. The
// setting is per thread and inherited by the threads a process starts, so a
// constructor that runs before main covers every pool thread.
//
// CPUID_MASK=avx2     AVX2 + FMA, no AVX-VNNI, AVX-512 or AMX (Zen 1-3, Skylake
//                     desktops)
// CPUID_MASK=avxvnni  also AVX-VNNI on 256-bit registers (Alder Lake, N100)
//
// Build: cc -O2 -shared -fPIC -o cpuid-mask.so scripts/cpuid-mask.c
// Use:   CPUID_MASK=avx2 LD_PRELOAD=./cpuid-mask.so dla-tools bench ...
// glibc picks its own string routines before any constructor runs; pair this
// with GLIBC_TUNABLES (cpu-bench.sh does) to hide AVX-512 from glibc too.
// A program that installs its own SIGSEGV handler afterwards (perf does;
// Rust's std and ONNX Runtime do not) dies at its next `cpuid`: preload it
// into the program measured (`perf record -- env LD_PRELOAD=... prog`).
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define BIT(n) (1u << (n))

static int keep_avx_vnni;

// Leaf 7, sub-leaf 0: every AVX-512 extension, and AMX.
static const unsigned leaf7_ebx_hidden = BIT(16) | BIT(17) | BIT(21) | BIT(26) |
                                         BIT(27) | BIT(28) | BIT(30) | BIT(31);
static const unsigned leaf7_ecx_hidden = BIT(1) | BIT(6) | BIT(11) | BIT(12) | BIT(14);
static const unsigned leaf7_edx_hidden = BIT(2) | BIT(3) | BIT(8) | BIT(22) | BIT(23) |
                                         BIT(24) | BIT(25);
// Leaf 7, sub-leaf 1: AVX-VNNI (eax 4), AVX512_BF16 (eax 5), AVX-IFMA
// (eax 23), AVX-VNNI-INT8 and AVX-NE-CONVERT (edx 4, 5).
static const unsigned leaf7_1_eax_avx512 = BIT(5);
static const unsigned leaf7_1_eax_vnni = BIT(4) | BIT(23);
static const unsigned leaf7_1_edx_vnni = BIT(4) | BIT(5);
// Leaf 0xD, sub-leaf 0: the AVX-512 (opmask, ZMM) and AMX tile state
// components the OS could save.
static const unsigned leaf_d_eax_hidden = BIT(5) | BIT(6) | BIT(7) | BIT(17) | BIT(18);

static void hide(unsigned leaf, unsigned sub, unsigned *a, unsigned *b, unsigned *c,
                 unsigned *d) {
    if (leaf == 7 && sub == 0) {
        *b &= ~leaf7_ebx_hidden;
        *c &= ~leaf7_ecx_hidden;
        *d &= ~leaf7_edx_hidden;
    } else if (leaf == 7 && sub == 1) {
        *a &= ~leaf7_1_eax_avx512;
        if (!keep_avx_vnni) {
            *a &= ~leaf7_1_eax_vnni;
            *d &= ~leaf7_1_edx_vnni;
        }
    } else if (leaf == 0xd && sub == 0) {
        *a &= ~leaf_d_eax_hidden;
    }
}

static long cpuid_allowed(int allowed) {
    return syscall(SYS_arch_prctl, ARCH_SET_CPUID, allowed);
}

static void on_fault(int sig, siginfo_t *info, void *context) {
    ucontext_t *uc = context;
    greg_t *r = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)r[REG_RIP];
    // A real fault (not a trapped cpuid) gets the default action on return.
    if (info->si_code != SI_KERNEL || ip[0] != 0x0f || ip[1] != 0xa2) {
        signal(sig, SIG_DFL);
        return;
    }
    unsigned leaf = (unsigned)r[REG_RAX], sub = (unsigned)r[REG_RCX];
    unsigned a, b, c, d;
    cpuid_allowed(1);
    __cpuid_count(leaf, sub, a, b, c, d);
    cpuid_allowed(0);
    hide(leaf, sub, &a, &b, &c, &d);
    r[REG_RAX] = a;
    r[REG_RBX] = b;
    r[REG_RCX] = c;
    r[REG_RDX] = d;
    r[REG_RIP] += 2;
}

__attribute__((constructor)) static void mask_cpuid(void) {
    const char *mask = getenv("CPUID_MASK");
    if (!mask || !*mask) {
        return;
    }
    if (strcmp(mask, "avx2") && strcmp(mask, "avxvnni")) {
        fprintf(stderr, "cpuid-mask: CPUID_MASK=%s: expected avx2 or avxvnni\n", mask);
        exit(2);
    }
    keep_avx_vnni = strcmp(mask, "avxvnni") == 0;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_fault;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGSEGV, &action, NULL) != 0 || cpuid_allowed(0) != 0) {
        perror("cpuid-mask: CPUID faulting (needs cpuid_fault in /proc/cpuinfo)");
        exit(2);
    }
}
