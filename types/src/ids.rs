//! Newtypes for the integers of the protocol, so a round is never passed where a height is expected.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        pub struct $name(pub $inner);

        impl $name {
            /// The raw value.
            pub const fn get(self) -> $inner {
                self.0
            }

            /// The next value, or `None` on overflow.
            pub fn checked_next(self) -> Option<Self> {
                self.0.checked_add(1).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<$inner> for $name {
            fn from(v: $inner) -> Self {
                Self(v)
            }
        }
    };
}

id_newtype!(
    /// A committee's lifetime; the validator set is fixed within an epoch.
    Epoch(u64)
);
id_newtype!(
    /// A consensus round within an epoch.
    Round(u64)
);
id_newtype!(
    /// The position of a committed block in the chain (genesis is 0).
    Height(u64)
);
id_newtype!(
    /// Voting power of a validator.
    Stake(u64)
);
id_newtype!(
    /// A validator's position in the committee's ordered list.
    ValidatorIndex(u32)
);
id_newtype!(
    /// The network a message belongs to; bound into every signature.
    ChainId(u64)
);
id_newtype!(
    /// Milliseconds since the Unix epoch.
    TimestampMs(u64)
);
id_newtype!(
    /// An account's transaction counter.
    Nonce(u64)
);

impl ValidatorIndex {
    /// The index as a `usize`, for lookups with `get()`.
    pub fn as_usize(self) -> usize {
        self.0 as usize
    }
}
