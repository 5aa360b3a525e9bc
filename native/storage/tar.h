/* A streaming tar reader for OCI layers: ustar, PAX (x and g), GNU long names (L, K), base-256 numbers and
 * the three GNU sparse encodings (old GNU 'S' with extension blocks, PAX 0.0/0.1, PAX 1.0 with the map in
 * the data), decoded the way Go's archive/tar decodes them. Nothing is interpreted as a path here; the
 * extractor (extract.c) decides what a name may do.
 *
 * Bounds (a layer is input from outside): PAX and GNU long-name records ≤ 1 MiB each, names ≤ 64 KiB,
 * ≤ 1024 xattrs of ≤ 64 KiB each per entry, sparse maps ≤ 1 Mi segments, every number checked for
 * overflow. A violation is a corrupt layer (EBADMSG), never a silent truncation.
 *
 * End of archive: two zero blocks, or EOF exactly at a header boundary (as Go accepts). A zero block
 * followed by anything but a second one is corrupt: whatever comes after the end marker is not applied
 * (GNU tar and Go stop there too). The rest of the input is drained, so the writer of a pipe never sees
 * EPIPE. */
#ifndef BERTH_TAR_H
#define BERTH_TAR_H
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "error.h"

#define TAR_MAX_RECORD (1u << 20)
#define TAR_MAX_NAME (1u << 16)
#define TAR_MAX_XATTRS 1024
#define TAR_MAX_XATTR_VALUE (1u << 16)
#define TAR_MAX_SPARSE (1u << 20)

typedef struct tar_reader tar_reader;

struct tar_xattr {
  char *name;
  char *value; /* binary, value_len bytes */
  size_t value_len;
};

struct tar_sparse {
  uint64_t offset, length;
};

enum tar_sparse_kind { TAR_SPARSE_NONE, TAR_SPARSE_OLDGNU, TAR_SPARSE_PAX0, TAR_SPARSE_PAX1 };

struct tar_entry {
  char type; /* '0' file (also '\0', '7'), '1' hardlink, '2' symlink, '3' char, '4' block, '5' dir, '6' fifo,
                anything else is reported as-is and skipped by the caller */
  char *name;
  char *linkname;
  uint64_t size;     /* bytes of data in the archive (for sparse files: the stored segments) */
  uint64_t realsize; /* the file's logical size (== size unless sparse) */
  mode_t mode;       /* permission bits, 07777 */
  uint64_t uid, gid;
  struct timespec mtime;
  unsigned devmajor, devminor;
  struct tar_xattr *xattrs;
  size_t nxattrs;
  enum tar_sparse_kind sparse_kind;
  struct tar_sparse *sparse;
  size_t nsparse;
};

tar_reader *tar_reader_new(int fd);
void tar_reader_free(tar_reader *r);
/* Bytes consumed from the fd so far (everything read, including what was drained). */
uint64_t tar_reader_offset(const tar_reader *r);

/* Next entry: 1 = got one (e is filled; release with tar_entry_clear), 0 = end of archive, <0 = error.
 * The previous entry's unread data is skipped first. For a PAX 1.0 sparse file the map is read from the
 * front of the data here, so e->size then counts only the segments. */
int tar_next(tar_reader *r, struct tar_entry *e, berth_err_t *err);
void tar_entry_clear(struct tar_entry *e);

/* Copy the current entry's data (e->size bytes, or fewer with tar_read_data) to fd at its current
 * position (or, for sparse files, segment by segment at their offsets: see extract.c). */
int tar_copy_data(tar_reader *r, int fd, uint64_t n, berth_err_t *err);
/* Discard n bytes of the current entry's data. */
int tar_skip_data(tar_reader *r, uint64_t n, berth_err_t *err);
/* Read up to the rest of the input after the end of the archive (so a pipe writer never gets EPIPE). */
int tar_drain(tar_reader *r, berth_err_t *err);

/* Left in the current entry (data not yet consumed). */
uint64_t tar_data_left(const tar_reader *r);

#endif
