// A test's way into AtomicFileWriter (include/pserver/atomic_file.h; it names this class its
// friend): the tests of every file format that writes through it run the full-disk paths with it.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "pserver/atomic_file.h"

namespace pserver {

class AtomicFileWriterTestPeer {
 public:
  // Points a writer's temporary file descriptor at another file (e.g. /dev/full), so that the
  // failure paths of a full disk run for real, also as root (for whom permissions stop nothing).
  static void RedirectWrites(AtomicFileWriter& w, const char* device) {
    const int fd = ::open(device, O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0) << device;
    ASSERT_GE(::dup2(fd, w.fd_), 0);
    ::close(fd);
  }
};

}  // namespace pserver
