//! The recipe's memory allocator (wasm32 only, feature `arena`, on by default): a bump
//! allocator over a static arena, falling back to the standard allocator when the
//! arena is full.
//!
//! Why: the host gives every invocation a fresh instance, so nothing allocated lives
//! past the call and freeing is pointless; what costs is *growing* memory. Rust's
//! standard wasm allocator takes memory with `memory.grow` on a call's first
//! allocation, and the host must then shrink the recycled instance slot back to the
//! module's initial size before the next call: two `mprotect`s per call, each flushing
//! the TLB of every core running the server (measured: the largest single cost of a
//! no-op call). The arena is zero-initialised static data, so it is part of the
//! module's *initial* memory: calls that fit in it never grow memory, and pages the
//! call does not touch cost nothing (the host resets only pages that were written).
//!
//! The arena reuses space only for the most recent allocation (freed or grown in
//! place), which is what a short call's temporaries mostly are. Larger or
//! longer-lived working sets spill to the standard allocator, exactly as before.
//!
//! A recipe that wants its own `#[global_allocator]` turns this off with
//! `default-features = false`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;

/// Arena size. Part of the module's initial memory (well under the host's default
/// 16 MiB limit); a no-op call uses a few KiB of it.
const ARENA_BYTES: usize = 1 << 20;

/// The arena itself: all zeros, so it is `.bss` (part of the initial memory, not of
/// the module's bytes). Its bookkeeping lives in separate statics for the same reason.
#[repr(C, align(16))]
struct Arena(UnsafeCell<[u8; ARENA_BYTES]>);

/// A cell of bookkeeping (zero-initialised, like the arena).
struct Cell(UnsafeCell<usize>);

// SAFETY: a wasm32 recipe instance is single-threaded (the host enables no threads),
// so the cells are never accessed concurrently.
unsafe impl Sync for Arena {}
// SAFETY: as for Arena.
unsafe impl Sync for Cell {}

/// Bump allocation in [`ARENA`], [`System`] beyond it.
pub struct BumpThenSystem;

static ARENA: Arena = Arena(UnsafeCell::new([0; ARENA_BYTES]));
/// Offset of the first free byte.
static NEXT: Cell = Cell(UnsafeCell::new(0));
/// Offset + 1 of the most recent allocation (the one that may shrink, grow or be
/// given back in place); 0 if there is none.
static LAST: Cell = Cell(UnsafeCell::new(0));

impl BumpThenSystem {
    fn base() -> usize {
        ARENA.0.get() as usize
    }

    fn owns(ptr: *mut u8) -> bool {
        let p = ptr as usize;
        p >= Self::base() && p < Self::base() + ARENA_BYTES
    }

    /// A block of `layout` from the arena, or None if it does not fit.
    ///
    /// # Safety
    /// Single-threaded use only (see [`Arena`]).
    unsafe fn bump(layout: Layout) -> Option<*mut u8> {
        // SAFETY: single-threaded, per the caller's contract.
        let next = unsafe { &mut *NEXT.0.get() };
        let base = Self::base();
        let start = (base + *next).checked_next_multiple_of(layout.align())? - base;
        let end = start.checked_add(layout.size())?;
        if end > ARENA_BYTES {
            return None;
        }
        *next = end;
        // SAFETY: as above.
        unsafe { *LAST.0.get() = start + 1 };
        Some((base + start) as *mut u8)
    }
}

unsafe impl GlobalAlloc for BumpThenSystem {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: wasm32 recipes are single-threaded.
        match unsafe { Self::bump(layout) } {
            Some(p) => p,
            // SAFETY: forwarding the caller's valid layout.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if Self::owns(ptr) {
            let offset = ptr as usize - Self::base();
            // SAFETY: single-threaded.
            unsafe {
                if *LAST.0.get() == offset + 1 {
                    // The most recent block: give it back.
                    *NEXT.0.get() = offset;
                    *LAST.0.get() = 0;
                }
            }
        } else {
            // SAFETY: a block System allocated with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if Self::owns(ptr) {
            let offset = ptr as usize - Self::base();
            // SAFETY: single-threaded.
            unsafe {
                if *LAST.0.get() == offset + 1 {
                    if let Some(end) = offset.checked_add(new_size) {
                        if end <= ARENA_BYTES {
                            // The most recent block grows or shrinks in place.
                            *NEXT.0.get() = end;
                            return ptr;
                        }
                    }
                }
            }
        } else {
            // SAFETY: a System block with this layout; the caller guarantees new_size.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // Move: a new block (arena or System), copy, free the old one.
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        // SAFETY: valid layout; the copy stays within both blocks.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(all(target_arch = "wasm32", feature = "arena"))]
#[global_allocator]
static ALLOCATOR: BumpThenSystem = BumpThenSystem;

#[cfg(test)]
mod tests {
    use super::*;

    /// The allocator's bookkeeping, natively (the arena is a process-wide static: this
    /// is the only test that touches it).
    #[test]
    fn bump_reuses_the_last_block_and_spills_to_system() {
        let a = BumpThenSystem;
        let l8 = Layout::from_size_align(8, 8).unwrap();
        // SAFETY: single test thread on the arena; layouts are valid; every block is
        // freed with its layout.
        unsafe {
            let p1 = a.alloc(l8);
            assert!(BumpThenSystem::owns(p1));
            assert_eq!(p1 as usize % 8, 0);
            let p2 = a.alloc(Layout::from_size_align(3, 1).unwrap());
            assert_eq!(p2 as usize, p1 as usize + 8);
            // The most recent block grows in place, keeping its bytes.
            *p2 = 7;
            let p2b = a.realloc(p2, Layout::from_size_align(3, 1).unwrap(), 100);
            assert_eq!(p2b, p2);
            assert_eq!(*p2b, 7);
            // An older block moves when it grows, bytes copied.
            *p1 = 9;
            let p1b = a.realloc(p1, l8, 16);
            assert_ne!(p1b, p1);
            assert_eq!(*p1b, 9);
            // Freeing the most recent block gives its space back.
            a.dealloc(p1b, Layout::from_size_align(16, 8).unwrap());
            let p3 = a.alloc(Layout::from_size_align(16, 8).unwrap());
            assert_eq!(p3, p1b);
            // Too big for what is left: the standard allocator serves it.
            let big = Layout::from_size_align(ARENA_BYTES, 16).unwrap();
            let p4 = a.alloc(big);
            assert!(!p4.is_null());
            assert!(!BumpThenSystem::owns(p4));
            let p4b = a.realloc(p4, big, ARENA_BYTES * 2);
            assert!(!BumpThenSystem::owns(p4b));
            a.dealloc(p4b, Layout::from_size_align(ARENA_BYTES * 2, 16).unwrap());
        }
    }
}
