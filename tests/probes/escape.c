/*
 * lxvirt's container escape probe. Run as root inside a container, it tries
 * the known ways from a container to the host and prints one line per
 * attempt, never stopping at the first failure:
 *
 *     NAME VERDICT [DETAIL]
 *
 * VERDICT is `ok` when the attempt got through (the escape signal), the
 * errno name when the kernel refused it, or a word for a harmless outcome
 * (`empty`, `own-root`, `unchanged`, `not-mounted`, ...). The last line is
 * `done`. Every attempt is harmless when it succeeds: values are written
 * back unchanged or restored, files are opened without being written, and
 * capability checks use arguments the kernel rejects right after the
 * check (a refusal other than EPERM then means the check passed; ENOSYS
 * means the kernel has no such call, and says nothing).
 *
 * Usage: escape [--disk MAJ:MIN] [--disk-path PATH] [--host-pid PID]
 *               [--host-netns net:[INODE]]   (readlink /proc/self/ns/net on the host)
 *
 * Built by tests/tests/escape.rs and tests/compare-escapes with
 * `cc -static`, so that it runs in a root with nothing else in it.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <linux/reboot.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/timex.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef KEYCTL_READ
#define KEYCTL_READ 11
#endif
#define KEY_SPEC_SESSION_KEYRING (-3)
#define KEY_SPEC_USER_KEYRING (-4)
#define FILEID_INO32_GEN 1

static char scratch[64];
static struct stat own_root;

static const char *ename(int e) {
    const char *n = strerrorname_np(e);
    return n ? n : "EUNKNOWN";
}

static void line(const char *prefix, const char *name, const char *verdict,
                 const char *detail) {
    printf("%s%s %s%s%s\n", prefix, name, verdict, detail && *detail ? " " : "",
           detail ? detail : "");
    fflush(stdout);
}

/* A syscall whose success is the escape: ok, or why not. */
static void result(const char *prefix, const char *name, long rc) {
    line(prefix, name, rc < 0 ? ename(errno) : "ok", NULL);
}

/* A capability check: the arguments are chosen so that the kernel rejects
 * them right after the check, so anything but EPERM means it passed. */
static void capability(const char *name, long rc) {
    char detail[64];
    if (rc >= 0) {
        line("", name, "ok", NULL);
    } else if (errno == EPERM || errno == ENOSYS) {
        line("", name, ename(errno), NULL);
    } else {
        snprintf(detail, sizeof detail, "past-permission-check:%s", ename(errno));
        line("", name, "ok", detail);
    }
}

static const char *in_scratch(const char *leaf) {
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", scratch, leaf);
    return path;
}

/* Reads up to `len` bytes of a file; -1 with errno on failure. */
static ssize_t read_file(const char *path, char *buf, size_t len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t total = 0, n = 0;
    while ((size_t)total < len - 1 && (n = read(fd, buf + total, len - 1 - total)) > 0)
        total += n;
    int saved = errno;
    close(fd);
    errno = saved;
    if (n < 0 && total == 0) return -1;
    buf[total] = 0;
    return total;
}

static int write_file(const char *path, const char *value) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = write(fd, value, strlen(value));
    int saved = errno;
    close(fd);
    errno = saved;
    return n < 0 ? -1 : 0;
}

/* Opening for writing is the escape: nothing is written. */
static void open_for_write(const char *prefix, const char *name, const char *path) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        line(prefix, name, ename(errno), path);
        return;
    }
    close(fd);
    line(prefix, name, "ok", path);
}

/* A readable host file with content is the escape; a mask reads empty. */
static void read_secret(const char *name, const char *path) {
    char buf[4096];
    ssize_t n = read_file(path, buf, sizeof buf);
    if (n < 0) line("", name, ename(errno), NULL);
    else if (n == 0) line("", name, "empty", NULL);
    else line("", name, "ok", "has-content");
}

/* ---- kernel interfaces: sysctl, sysrq, sysfs ---- */

static void sysctl_core_pattern(const char *prefix) {
    const char *path = "/proc/sys/kernel/core_pattern";
    char before[256], after[256];
    if (read_file(path, before, sizeof before) < 0) {
        line(prefix, "sysctl_core_pattern", ename(errno), "read");
        return;
    }
    if (write_file(path, "core.lxvirt-escape-probe") < 0) {
        line(prefix, "sysctl_core_pattern", ename(errno), NULL);
        return;
    }
    if (read_file(path, after, sizeof after) >= 0 &&
        strncmp(after, "core.lxvirt-escape-probe", 24) == 0) {
        write_file(path, before);
        line(prefix, "sysctl_core_pattern", "ok", "written-then-restored");
    } else {
        line(prefix, "sysctl_core_pattern", "unchanged", "write-accepted-value-kept");
    }
}

static void kernel_interfaces(void) {
    sysctl_core_pattern("");
    /* 4 only silences the kernel's drop_caches message: nothing is dropped. */
    result("", "sysctl_drop_caches", write_file("/proc/sys/vm/drop_caches", "4"));
    open_for_write("", "sysrq_trigger", "/proc/sysrq-trigger");
    open_for_write("", "sys_uevent_helper", "/sys/kernel/uevent_helper");
    char value[64];
    const char *ksm = "/sys/kernel/mm/ksm/run";
    if (read_file(ksm, value, sizeof value) < 0) line("", "sys_mm_write", ename(errno), "read");
    else result("", "sys_mm_write", write_file(ksm, value));
}

/* ---- host secrets and kernel memory ---- */

static void kallsyms(void) {
    char buf[4096];
    ssize_t n = read_file("/proc/kallsyms", buf, sizeof buf);
    if (n < 0) {
        line("", "proc_kallsyms", ename(errno), NULL);
        return;
    }
    for (char *l = buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (strtoull(l, NULL, 16) != 0) {
            line("", "proc_kallsyms", "ok", "real-addresses");
            return;
        }
    }
    line("", "proc_kallsyms", n ? "zeros" : "empty", NULL);
}

static void keyring(const char *name, long id) {
    char buf[1024];
    long n = syscall(SYS_keyctl, KEYCTL_READ, id, buf, sizeof buf);
    if (n < 0) {
        line("", name, ename(errno), NULL);
    } else {
        char detail[32];
        snprintf(detail, sizeof detail, "%ld-bytes", n);
        line("", name, "ok", detail);
    }
}

static void secrets(void) {
    int fd = open("/proc/kcore", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        line("", "proc_kcore", ename(errno), NULL);
    } else {
        char c;
        ssize_t n = read(fd, &c, 1);
        line("", "proc_kcore", n > 0 ? "ok" : n == 0 ? "empty" : ename(errno), NULL);
        close(fd);
    }
    read_secret("proc_keys", "/proc/keys");
    keyring("keyctl_session_keyring", KEY_SPEC_SESSION_KEYRING);
    keyring("keyctl_user_keyring", KEY_SPEC_USER_KEYRING);
    kallsyms();
    read_secret("proc_timer_list", "/proc/timer_list");
    read_secret("proc_sched_debug", "/proc/sched_debug");
    DIR *d = opendir("/sys/firmware");
    if (!d) {
        line("", "sys_firmware", ename(errno), NULL);
    } else {
        int entries = 0;
        struct dirent *e;
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) entries++;
        closedir(d);
        line("", "sys_firmware", entries ? "ok" : "empty", NULL);
    }
}

/* ---- mounts: the ways to undo read-only and masked paths ---- */

static void mount_attempts(const char *prefix);

static int is_mount_point(const char *path) {
    char parent[256];
    struct stat a, b;
    snprintf(parent, sizeof parent, "%s/..", path);
    return stat(path, &a) == 0 && stat(parent, &b) == 0 && a.st_dev != b.st_dev;
}

/* Mounts a fresh TYPE at LEAF; reports the errno, or "ok" unless QUIET
 * (the caller reports). Returns whether it is mounted. */
static int try_mount(const char *prefix, const char *name, const char *leaf,
                     const char *type, const char *data, int quiet) {
    const char *target = in_scratch(leaf);
    mkdir(target, 0700);
    if (mount(type, target, type, 0, data) < 0) {
        line(prefix, name, ename(errno), NULL);
        return 0;
    }
    if (!quiet) line(prefix, name, "ok", NULL);
    return 1;
}

static void fresh_mount(const char *prefix, const char *name, const char *leaf,
                        const char *type, const char *data) {
    try_mount(prefix, name, leaf, type, data, 0);
}

static void unmount(const char *leaf) {
    umount2(in_scratch(leaf), MNT_DETACH);
}

/* The value of this hierarchy's line in /proc/self/cgroup. */
static void own_cgroups(char *buf, size_t len) {
    if (read_file("/proc/self/cgroup", buf, len) < 0) buf[0] = 0;
}

/* Writes our pid to DIR/cgroup.procs: ok only if our cgroups changed. */
static void move_to(const char *prefix, const char *name, const char *dir) {
    char path[256], pid[16], before[2048], after[2048];
    snprintf(path, sizeof path, "%s/cgroup.procs", dir);
    snprintf(pid, sizeof pid, "%d", getpid());
    own_cgroups(before, sizeof before);
    if (write_file(path, pid) < 0) {
        line(prefix, name, ename(errno), dir);
        return;
    }
    own_cgroups(after, sizeof after);
    line(prefix, name, strcmp(before, after) ? "ok" : "unchanged", dir);
}

static void cgroup1(const char *prefix, const char *controller, const char *data) {
    char name[64], leaf[64], path[256];
    snprintf(name, sizeof name, "cgroup1_mount_%s", controller);
    snprintf(leaf, sizeof leaf, "cg1-%s", controller);
    int mounted = try_mount(prefix, name, leaf, "cgroup", data, 1);
    if (mounted) {
        /* A mount made in a cgroup namespace is rooted at the container's
         * own cgroup, which has no release_agent: its own subtree only. */
        snprintf(path, sizeof path, "%s/release_agent", in_scratch(leaf));
        line(prefix, name, access(path, F_OK) == 0 ? "ok" : "own-subtree", NULL);
    }
    if (!mounted || !is_mount_point(in_scratch(leaf))) {
        static const char *after[] = {"release_agent", "notify_on_release", "move_root", NULL};
        for (const char **a = after; *a; a++) {
            snprintf(name, sizeof name, "cgroup1_%s_%s", controller, *a);
            line(prefix, name, "not-mounted", NULL);
        }
        return;
    }
    snprintf(path, sizeof path, "%s/release_agent", in_scratch(leaf));
    snprintf(name, sizeof name, "cgroup1_%s_release_agent", controller);
    /* Only a hierarchy's real root has a release_agent; a mount made in a
     * cgroup namespace is rooted at the container's own cgroup, where
     * notify_on_release alone runs nothing. */
    int root = access(path, F_OK) == 0;
    open_for_write(prefix, name, path);
    snprintf(path, sizeof path, "%s/notify_on_release", in_scratch(leaf));
    snprintf(name, sizeof name, "cgroup1_%s_notify_on_release", controller);
    if (root) open_for_write(prefix, name, path);
    else line(prefix, name, "not-hierarchy-root", NULL);
    snprintf(name, sizeof name, "cgroup1_%s_move_root", controller);
    move_to(prefix, name, in_scratch(leaf));
    unmount(leaf);
}

static void undo_masks(const char *prefix) {
    static const char *masks[] = {"/proc/kcore", "/proc/keys", "/proc/timer_list",
                                  "/proc/sched_debug", NULL};
    int first = 0;
    const char *unmasked = NULL;
    for (const char **m = masks; *m && !unmasked; m++) {
        if (access(*m, F_OK) < 0) continue;
        if (umount2(*m, MNT_DETACH) == 0) unmasked = *m;
        else if (!first) first = errno;
    }
    if (unmasked) line(prefix, "umount_mask", "ok", unmasked);
    else line(prefix, "umount_mask", first ? ename(first) : "no-mask", NULL);
    /* The root itself, to reach what it is stacked on: in a child, in a
     * copy of the mount namespace (which keeps each mount's lock), so that
     * a success detaches nobody else's root. */
    pid_t pid = fork();
    if (pid == 0) {
        if (unshare(CLONE_NEWNS) < 0) line(prefix, "umount_root", ename(errno), "unshare");
        else result(prefix, "umount_root", umount2("/", MNT_DETACH));
        _exit(0);
    }
    waitpid(pid, NULL, 0);
    /* A clone of /proc without its submounts reveals what they cover. */
    long fd = syscall(SYS_open_tree, AT_FDCWD, "/proc", OPEN_TREE_CLONE | O_CLOEXEC);
    result(prefix, "open_tree_proc_without_masks", fd);
    if (fd >= 0) close(fd);
}

static void mount_attempts(const char *prefix) {
    result(prefix, "remount_proc_sys_rw",
           mount(NULL, "/proc/sys", NULL, MS_REMOUNT | MS_BIND, NULL));
    result(prefix, "remount_sys_rw", mount(NULL, "/sys", NULL, MS_REMOUNT | MS_BIND, NULL));
    fresh_mount(prefix, "mount_procfs", "proc", "proc", NULL);
    unmount("proc");
    fresh_mount(prefix, "mount_sysfs", "sys", "sysfs", NULL);
    if (is_mount_point(in_scratch("sys"))) {
        char path[256], value[64];
        snprintf(path, sizeof path, "%s/kernel/mm/ksm/run", in_scratch("sys"));
        if (read_file(path, value, sizeof value) < 0)
            line(prefix, "mount_sysfs_write", ename(errno), "read");
        else
            result(prefix, "mount_sysfs_write", write_file(path, value));
        unmount("sys");
    } else {
        line(prefix, "mount_sysfs_write", "not-mounted", NULL);
    }
    undo_masks(prefix);
    cgroup1(prefix, "memory", "memory");
    cgroup1(prefix, "net_cls", "net_cls");
    cgroup1(prefix, "named", "none,name=lxvirtescape");
    if (try_mount(prefix, "cgroup2_mount", "cg2", "cgroup2", NULL, 1)) {
        /* Every cgroup but the root has cgroup.type. */
        char path[256];
        snprintf(path, sizeof path, "%s/cgroup.type", in_scratch("cg2"));
        line(prefix, "cgroup2_mount", access(path, F_OK) == 0 ? "own-subtree" : "ok", NULL);
    }
    if (is_mount_point(in_scratch("cg2"))) {
        move_to(prefix, "cgroup2_move_root", in_scratch("cg2"));
        unmount("cg2");
    } else {
        line(prefix, "cgroup2_move_root", "not-mounted", NULL);
    }
}

/* ---- cgroups visible without mounting ---- */

struct cgmount {
    char root[256], point[256], type[16];
};

static int cgroup_mounts(struct cgmount *out, int max) {
    FILE *f = fopen("/proc/self/mountinfo", "re");
    char l[1024];
    int n = 0;
    if (!f) return 0;
    while (n < max && fgets(l, sizeof l, f)) {
        char root[256], point[256], type[16];
        char *sep = strstr(l, " - ");
        if (!sep || sscanf(l, "%*s %*s %*s %255s %255s", root, point) != 2) continue;
        if (sscanf(sep + 3, "%15s", type) != 1) continue;
        if (strcmp(type, "cgroup") && strcmp(type, "cgroup2")) continue;
        if (strncmp(point, scratch, strlen(scratch)) == 0) continue;
        snprintf(out[n].root, sizeof out[n].root, "%s", root);
        snprintf(out[n].point, sizeof out[n].point, "%s", point);
        snprintf(out[n].type, sizeof out[n].type, "%s", type);
        n++;
    }
    fclose(f);
    return n;
}

/* Whether DIR/cgroup.procs lists us. */
static int holds_us(const char *dir) {
    char path[600], buf[8192], pid[16];
    snprintf(path, sizeof path, "%s/cgroup.procs", dir);
    snprintf(pid, sizeof pid, "%d", getpid());
    if (read_file(path, buf, sizeof buf) < 0) return 0;
    for (char *t = strtok(buf, "\n"); t; t = strtok(NULL, "\n"))
        if (!strcmp(t, pid)) return 1;
    return 0;
}

/* Writes a limit of our own cgroup back unchanged. Our path in each
 * hierarchy, from /proc/self/cgroup, is relative to our cgroup namespace:
 * every path is tried below every visible mount, and the directories that
 * list us are ours. */
static void own_limits(struct cgmount *m, int n) {
    static const char *limits[] = {"memory.limit_in_bytes", "memory.max", "pids.max",
                                   "cpu.shares", "cpu.weight", NULL};
    char cgroups[4096];
    own_cgroups(cgroups, sizeof cgroups);
    int seen = 0, first = 0;
    for (int i = 0; i < n; i++) {
        for (char *l = cgroups; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
            char path[256], dir[512];
            const char *p = strchr(l, ':') ? strchr(strchr(l, ':') + 1, ':') : NULL;
            if (!p) continue;
            snprintf(path, sizeof path, "%.*s", (int)strcspn(p + 1, "\n"), p + 1);
            /* The root of a hierarchy refuses limits whoever writes. */
            if (!strcmp(path, "/")) continue;
            snprintf(dir, sizeof dir, "%s%s", m[i].point, path);
            if (!holds_us(dir)) continue;
            seen = 1;
            for (const char **f = limits; *f; f++) {
                char file[640], value[64];
                snprintf(file, sizeof file, "%s/%s", dir, *f);
                if (read_file(file, value, sizeof value) < 0) continue;
                if (write_file(file, value) == 0) {
                    line("", "cgroup_write_own_limits", "ok", file);
                    return;
                }
                if (!first) first = errno;
            }
        }
    }
    line("", "cgroup_write_own_limits",
         first ? ename(first) : seen ? "no-limit-files" : "own-cgroup-not-visible", NULL);
}

/* Tries FILE (or, with file NULL, a move) in every visible cgroup mount:
 * ok if any got through, else the first refusal. */
static void visible_cgroups(void) {
    struct cgmount m[32];
    int n = cgroup_mounts(m, 32);
    own_limits(m, n);
    static const char *files[] = {"release_agent", "notify_on_release", NULL};
    for (const char **f = files; *f; f++) {
        char name[64], path[512];
        int first = 0;
        snprintf(name, sizeof name, "cgroup_visible_%s", *f);
        for (int i = 0; i < n; i++) {
            /* notify_on_release matters only next to a release_agent. */
            snprintf(path, sizeof path, "%s/release_agent", m[i].point);
            if (access(path, F_OK) < 0) continue;
            snprintf(path, sizeof path, "%s/%s", m[i].point, *f);
            int fd = open(path, O_WRONLY | O_CLOEXEC);
            if (fd >= 0) {
                close(fd);
                line("", name, "ok", path);
                first = -1;
                break;
            }
            if (!first && errno != ENOENT) first = errno;
        }
        if (first >= 0) line("", name, first ? ename(first) : "none-visible", NULL);
    }
    /* Moving into the root of each visible hierarchy. */
    char before[2048], after[2048], pid[16];
    int first = 0, wrote = 0;
    snprintf(pid, sizeof pid, "%d", getpid());
    for (int i = 0; i < n; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/cgroup.procs", m[i].point);
        own_cgroups(before, sizeof before);
        if (write_file(path, pid) < 0) {
            if (!first) first = errno;
            continue;
        }
        wrote = 1;
        own_cgroups(after, sizeof after);
        if (strcmp(before, after)) {
            line("", "cgroup_visible_move_root", "ok", m[i].point);
            return;
        }
    }
    line("", "cgroup_visible_move_root",
         wrote ? "unchanged" : first ? ename(first) : "none-visible", NULL);
}

/* ---- device nodes ---- */

static void device(const char *name, const char *host_path, mode_t type, dev_t dev,
                   int read_it) {
    char label[64];
    const char *node = in_scratch(name);
    int made = mknod(node, type | 0600, dev) == 0;
    snprintf(label, sizeof label, "mknod_%s", name);
    line("", label, made ? "ok" : ename(errno), NULL);
    snprintf(label, sizeof label, "open_%s", name);
    const char *paths[] = {made ? node : NULL, host_path};
    int first = 0;
    for (int i = 0; i < 2; i++) {
        if (!paths[i]) continue;
        int fd = open(paths[i], O_RDONLY | O_CLOEXEC);
        char buf[512];
        ssize_t n = fd < 0 ? -1 : read_it ? read(fd, buf, sizeof buf) : 0;
        if (n < 0 && !first) first = errno;
        if (fd >= 0) close(fd);
        if (n >= 0) {
            line("", label, "ok", paths[i]);
            unlink(node);
            return;
        }
    }
    unlink(node);
    line("", label, first ? ename(first) : "ENOENT", NULL);
}

/* ---- capabilities ---- */

static void capabilities(void) {
    capability("init_module", syscall(SYS_init_module, NULL, 0, ""));
    capability("finit_module", syscall(SYS_finit_module, -1, "", 0));
    capability("delete_module", syscall(SYS_delete_module, "lxvirt_no_such_module", O_NONBLOCK));
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    capability("clock_settime", syscall(SYS_clock_settime, CLOCK_REALTIME, &now));
    capability("settimeofday", syscall(SYS_settimeofday, NULL, NULL));
    struct timex tx;
    memset(&tx, 0, sizeof tx);
    if (syscall(SYS_adjtimex, &tx) < 0) {
        line("", "adjtimex_set", ename(errno), "read");
    } else {
        tx.modes = ADJ_TICK; /* the tick just read: no change */
        capability("adjtimex_set", syscall(SYS_adjtimex, &tx));
    }
#ifdef SYS_iopl
    capability("iopl", syscall(SYS_iopl, 3));
    capability("ioperm", syscall(SYS_ioperm, 0x80, 1, 1));
#endif
    capability("swapon", syscall(SYS_swapon, "/lxvirt-no-such-swap", 0));
    capability("acct", syscall(SYS_acct, NULL));
    /* In a PID namespace the kernel refuses CAD_OFF with EINVAL after the
     * capability check: only 0 means the host's setting was reached. */
    long rc = syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2,
                      LINUX_REBOOT_CMD_CAD_OFF, NULL);
    line("", "reboot_cad_off", rc == 0 ? "ok" : errno == EINVAL ? "pid-namespace" : ename(errno),
         NULL);
    capability("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.map_type = BPF_MAP_TYPE_ARRAY;
    attr.key_size = 4;
    attr.value_size = 4;
    attr.max_entries = 1;
    long fd = syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr);
    capability("bpf", fd);
    if (fd >= 0) close(fd);
    struct perf_event_attr pe;
    memset(&pe, 0, sizeof pe);
    pe.type = PERF_TYPE_SOFTWARE;
    pe.size = sizeof pe;
    pe.config = PERF_COUNT_SW_CPU_CLOCK;
    pe.disabled = 1;
    fd = syscall(SYS_perf_event_open, &pe, -1, 0, -1, 0);
    capability("perf_event_open_system_wide", fd);
    if (fd >= 0) close(fd);
}

/* "Shocker": open the root inode of the filesystem under / by a guessed
 * handle (ext4's root is inode 2), around the container's root. */
static void shocker(void) {
    struct {
        struct file_handle h;
        unsigned int ino[2];
    } fh;
    fh.h.handle_bytes = sizeof fh.ino;
    fh.h.handle_type = FILEID_INO32_GEN;
    fh.ino[0] = 2;
    fh.ino[1] = 0;
    int mount_fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    long fd = syscall(SYS_open_by_handle_at, mount_fd, &fh, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        capability("open_by_handle_at", fd);
    } else {
        struct stat st;
        fstat(fd, &st);
        line("", "open_by_handle_at",
             st.st_dev == own_root.st_dev && st.st_ino == own_root.st_ino ? "own-root" : "ok",
             "opened-inode-2");
        close(fd);
    }
    if (mount_fd >= 0) close(mount_fd);
}

/* ---- host processes, network, roots ---- */

static void host_view(pid_t host_pid, const char *host_netns) {
    char path[64];
    struct stat st;
    if (host_pid > 0) {
        snprintf(path, sizeof path, "/proc/%d", host_pid);
        result("", "see_host_pid", stat(path, &st));
        result("", "signal_host_pid", kill(host_pid, 0));
    } else {
        line("", "see_host_pid", "no-host-pid-given", NULL);
        line("", "signal_host_pid", "no-host-pid-given", NULL);
    }
    if (stat("/proc/1/root/", &st) < 0)
        line("", "proc1_root", ename(errno), NULL);
    else
        line("", "proc1_root",
             st.st_dev == own_root.st_dev && st.st_ino == own_root.st_ino ? "own-root" : "ok",
             NULL);
    char buf[8192], names[256] = "";
    if (read_file("/proc/self/net/dev", buf, sizeof buf) < 0) {
        line("", "host_net_interfaces", ename(errno), NULL);
    } else {
        for (char *l = buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
            char name[64];
            char *colon = strchr(l, ':');
            if (!colon || colon - l > 60 || sscanf(l, " %63[^:]:", name) != 1) continue;
            if (strcmp(name, "lo") && strlen(names) + strlen(name) + 2 < sizeof names) {
                strcat(names, *names ? "," : "");
                strcat(names, name);
            }
        }
        /* A private namespace may have interfaces of its own (a veth):
         * only the host's namespace is the escape, when it is known. */
        char ns[64] = "";
        ssize_t len = readlink("/proc/self/ns/net", ns, sizeof ns - 1);
        ns[len > 0 ? len : 0] = 0;
        if (host_netns && *host_netns)
            line("", "host_net_interfaces", !strcmp(ns, host_netns) ? "ok" : "own-netns", names);
        else
            line("", "host_net_interfaces", *names ? "ok" : "only-lo", names);
    }
}

/* Pushes a character into the input of the terminal on stdin, as if typed
 * there: through `lxvirt enter` from a shell, that is the host shell's
 * terminal. A space: harmless where it lands. */
static void tiocsti(void) {
    char c = ' ';
    if (!isatty(0)) line("", "tiocsti_stdin", "not-a-tty", NULL);
    else result("", "tiocsti_stdin", ioctl(0, TIOCSTI, &c));
}

/* chroot into a subdirectory while holding a directory outside it, then
 * climb: a runtime that only chroots lets this reach the host's root. */
static void chroot_breakout(void) {
    pid_t pid = fork();
    if (pid == 0) {
        const char *jail = in_scratch("jail");
        mkdir(jail, 0700);
        int fd = open("/", O_RDONLY | O_DIRECTORY);
        if (chroot(jail) < 0) {
            line("", "chroot_breakout", ename(errno), NULL);
            _exit(0);
        }
        if (fchdir(fd) < 0) _exit(1);
        for (int i = 0; i < 64; i++)
            if (chdir("..") < 0) _exit(1);
        if (chroot(".") < 0) {
            line("", "chroot_breakout", ename(errno), "second-chroot");
            _exit(0);
        }
        struct stat st;
        stat("/", &st);
        line("", "chroot_breakout",
             st.st_dev == own_root.st_dev && st.st_ino == own_root.st_ino ? "own-root" : "ok",
             NULL);
        _exit(0);
    }
    waitpid(pid, NULL, 0);
    rmdir(in_scratch("jail"));
}

/* A user namespace of our own, mapped to our uid, and the mounts again. */
static void nested_user_namespace(void) {
    pid_t pid = fork();
    if (pid == 0) {
        char map[32];
        uid_t uid = geteuid();
        gid_t gid = getegid();
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0) {
            line("", "userns_unshare", ename(errno), NULL);
            _exit(0);
        }
        line("", "userns_unshare", "allowed", NULL);
        snprintf(map, sizeof map, "0 %d 1", uid);
        write_file("/proc/self/setgroups", "deny");
        int mapped = write_file("/proc/self/uid_map", map);
        snprintf(map, sizeof map, "0 %d 1", gid);
        mapped |= write_file("/proc/self/gid_map", map);
        if (mapped < 0) line("", "userns_map", ename(errno), NULL);
        mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
        sysctl_core_pattern("userns_");
        mount_attempts("userns_");
        _exit(0);
    }
    waitpid(pid, NULL, 0);
}

int main(int argc, char **argv) {
    unsigned maj = 0, min = 0;
    const char *disk_path = NULL;
    pid_t host_pid = 0;
    const char *host_netns = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--disk")) sscanf(argv[i + 1], "%u:%u", &maj, &min);
        else if (!strcmp(argv[i], "--disk-path")) disk_path = argv[i + 1];
        else if (!strcmp(argv[i], "--host-pid")) host_pid = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--host-netns")) host_netns = argv[i + 1];
    }
    stat("/", &own_root);
    snprintf(scratch, sizeof scratch, "/tmp/lxvirt-escape-XXXXXX");
    if (!mkdtemp(scratch)) {
        snprintf(scratch, sizeof scratch, "/lxvirt-escape-XXXXXX");
        if (!mkdtemp(scratch)) {
            printf("scratch %s\ndone\n", ename(errno));
            return 1;
        }
    }
    printf("probe uid=%d pid=%d\n", getuid(), getpid());

    kernel_interfaces();
    secrets();
    capabilities();
    shocker();
    if (maj) {
        device("host_disk", disk_path, S_IFBLK, makedev(maj, min), 1);
    } else {
        line("", "mknod_host_disk", "no-disk-given", NULL);
        line("", "open_host_disk", "no-disk-given", NULL);
    }
    device("dev_mem", "/dev/mem", S_IFCHR, makedev(1, 1), 0);
    device("dev_kmem", "/dev/kmem", S_IFCHR, makedev(1, 2), 0);
    device("dev_port", "/dev/port", S_IFCHR, makedev(1, 4), 0);
    host_view(host_pid, host_netns);
    chroot_breakout();
    tiocsti();
    nested_user_namespace();
    /* Last: these may change our mounts and cgroups for good. */
    visible_cgroups();
    mount_attempts("");

    static const char *leaves[] = {"proc", "sys", "cg1-memory", "cg1-net_cls", "cg1-named",
                                   "cg2", NULL};
    for (const char **l = leaves; *l; l++) rmdir(in_scratch(*l));
    rmdir(scratch);
    printf("done\n");
    return 0;
}
