// virtqueue/testing/driver_queue.h: the old name of virtqueue::DriverQueue,
// which moved to virtqueue/driver_queue.h (//virtqueue:driver) when a
// production user (the administration-queue driver) appeared.
#ifndef VMMKIT_VIRTQUEUE_TESTING_DRIVER_QUEUE_H_
#define VMMKIT_VIRTQUEUE_TESTING_DRIVER_QUEUE_H_

#include "virtqueue/driver_queue.h"

namespace vmmkit::virtqueue::testing {

using DriverQueue = ::vmmkit::virtqueue::DriverQueue;

}  // namespace vmmkit::virtqueue::testing

#endif  // VMMKIT_VIRTQUEUE_TESTING_DRIVER_QUEUE_H_
