/* srv_watch.c -- the model store's stamp for --watch: stat only, order-free. */
#include "srv_watch.h"
#include "errbuf.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* FNV-1a over bytes, continued from h. */
static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* splitmix64's finaliser: spreads a hash before it is summed with others, so
 * two entries cannot cancel by simple arithmetic. */
static uint64_t mix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t stat_hash(uint64_t h, const struct stat *st) {
    uint64_t v[4] = {(uint64_t)st->st_ino, (uint64_t)st->st_size, (uint64_t)st->st_mtim.tv_sec,
                     (uint64_t)st->st_mtim.tv_nsec};
    return fnv(h, v, sizeof v);
}

/* The sum of the folder's entries, seeded by its name and inode. A folder that
 * cannot be opened (gone since the listing, or not a folder) hashes its name only. */
static uint64_t folder_hash(int store_fd, const char *name) {
    uint64_t h = fnv(0xcbf29ce484222325ull, name, strlen(name) + 1);
    int fd = openat(store_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return mix(h);
    struct stat st;
    if (!fstat(fd, &st)) h = fnv(h, &st.st_ino, sizeof st.st_ino);
    uint64_t sum = mix(h);
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return sum;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (fstatat(fd, e->d_name, &st, 0) || !S_ISREG(st.st_mode)) continue;
        uint64_t fh = fnv(h, e->d_name, strlen(e->d_name) + 1);
        sum += mix(stat_hash(fh, &st));
    }
    closedir(d); /* closes fd */
    return sum;
}

int srv_watch_stamp(const char *dir, uint64_t *stamp, char *err, size_t errlen) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        errbuf_set(err, errlen, "model store %s: %s", dir, strerror(errno));
        return -1;
    }
    DIR *d = fdopendir(fd);
    if (!d) {
        errbuf_set(err, errlen, "model store %s: %s", dir, strerror(errno));
        close(fd);
        return -1;
    }
    uint64_t sum = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        struct stat st;
        if (fstatat(fd, e->d_name, &st, 0) || !S_ISDIR(st.st_mode)) continue;
        sum += folder_hash(fd, e->d_name);
    }
    closedir(d);
    *stamp = sum;
    return 0;
}
