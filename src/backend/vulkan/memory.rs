//! Counting the device memory that buffers hold.
//!
//! Every buffer a [`VulkanContext`](super::VulkanContext) creates takes its memory from one
//! allocator, vulkano's [`StandardMemoryAllocator`], which carves buffers out of large blocks of
//! device memory. [`CountingAllocator`] sits in front of it and adds up the bytes of the buffers
//! alive now and the most alive at once. A buffer's memory goes back when the buffer is dropped, and
//! that is when vulkano hands it back to the allocator: a buffer still used by a submitted command
//! buffer is kept alive by it, and counted until it has run. So the peak is the figure to hold
//! against PyTorch's `torch.cuda.max_memory_allocated`: the bytes of tensors in use at the worst
//! moment, not the blocks the allocator has reserved around them (which, like PyTorch's caching
//! allocator, it keeps for reuse).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use vulkano::DeviceSize;
use vulkano::device::{Device, DeviceOwned};
use vulkano::memory::allocator::{
    AllocationCreateInfo, AllocationType, DeviceLayout, MemoryAlloc, MemoryAllocator,
    MemoryAllocatorError, MemoryTypeFilter, StandardMemoryAllocator,
};
use vulkano::memory::{DedicatedAllocation, ExternalMemoryHandleTypes, MemoryRequirements};

/// The buffer memory a [`VulkanContext`](super::VulkanContext) holds (see
/// [`VulkanContext::memory_use`](super::VulkanContext::memory_use)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUse {
    /// Bytes of the buffers alive now, as allocated (each buffer's size rounded up to the
    /// allocator's alignment).
    pub live: u64,
    /// The most bytes alive at once since the context was made or
    /// [`VulkanContext::reset_peak_memory`](super::VulkanContext::reset_peak_memory) was called.
    pub peak: u64,
}

/// A [`MemoryAllocator`] that forwards to vulkano's standard one and counts what is out.
#[derive(Debug)]
pub(crate) struct CountingAllocator {
    inner: StandardMemoryAllocator,
    live: AtomicU64,
    peak: AtomicU64,
    /// Every byte ever allocated (what a recording has allocated is the difference of two
    /// readings).
    total: AtomicU64,
}

// ANCHOR: counting
impl CountingAllocator {
    pub(crate) fn new(device: Arc<Device>) -> CountingAllocator {
        CountingAllocator {
            inner: StandardMemoryAllocator::new_default(device),
            live: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }

    pub(crate) fn usage(&self) -> MemoryUse {
        MemoryUse {
            live: self.live.load(Ordering::Relaxed),
            peak: self.peak.load(Ordering::Relaxed),
        }
    }

    /// The bytes allocated since the allocator was made, freed or not.
    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Starts a new peak from what is alive now.
    pub(crate) fn reset_peak(&self) {
        self.peak
            .store(self.live.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// The bytes an allocation takes: its stretch of a shared block, or a whole block of its own.
    fn size(a: &MemoryAlloc) -> DeviceSize {
        a.suballocation
            .as_ref()
            .map_or_else(|| a.device_memory.allocation_size(), |s| s.size)
    }

    fn counted(
        &self,
        a: Result<MemoryAlloc, MemoryAllocatorError>,
    ) -> Result<MemoryAlloc, MemoryAllocatorError> {
        if let Ok(a) = &a {
            let size = Self::size(a);
            self.total.fetch_add(size, Ordering::Relaxed);
            let now = self.live.fetch_add(size, Ordering::Relaxed) + size;
            self.peak.fetch_max(now, Ordering::Relaxed);
        }
        a
    }
}
// ANCHOR_END: counting

// SAFETY: every method forwards to the standard allocator with the same arguments and returns what
// it returned, so its guarantees are this allocator's; the counters only read the allocations.
unsafe impl MemoryAllocator for CountingAllocator {
    fn find_memory_type_index(
        &self,
        memory_type_bits: u32,
        filter: MemoryTypeFilter,
    ) -> Option<u32> {
        self.inner.find_memory_type_index(memory_type_bits, filter)
    }

    fn allocate_from_type(
        &self,
        memory_type_index: u32,
        layout: DeviceLayout,
        allocation_type: AllocationType,
        never_allocate: bool,
    ) -> Result<MemoryAlloc, MemoryAllocatorError> {
        self.counted(self.inner.allocate_from_type(
            memory_type_index,
            layout,
            allocation_type,
            never_allocate,
        ))
    }

    fn allocate(
        &self,
        requirements: MemoryRequirements,
        allocation_type: AllocationType,
        create_info: AllocationCreateInfo,
        dedicated_allocation: Option<DedicatedAllocation<'_>>,
    ) -> Result<MemoryAlloc, MemoryAllocatorError> {
        self.counted(self.inner.allocate(
            requirements,
            allocation_type,
            create_info,
            dedicated_allocation,
        ))
    }

    fn allocate_dedicated(
        &self,
        memory_type_index: u32,
        allocation_size: DeviceSize,
        dedicated_allocation: Option<DedicatedAllocation<'_>>,
        export_handle_types: ExternalMemoryHandleTypes,
    ) -> Result<MemoryAlloc, MemoryAllocatorError> {
        self.counted(self.inner.allocate_dedicated(
            memory_type_index,
            allocation_size,
            dedicated_allocation,
            export_handle_types,
        ))
    }

    unsafe fn deallocate(&self, allocation: MemoryAlloc) {
        self.live
            .fetch_sub(Self::size(&allocation), Ordering::Relaxed);
        // SAFETY: the caller's contract (an allocation this allocator gave out, not used again) is
        // the standard allocator's, which gave it out.
        unsafe { self.inner.deallocate(allocation) }
    }
}

unsafe impl DeviceOwned for CountingAllocator {
    fn device(&self) -> &Arc<Device> {
        self.inner.device()
    }
}
