//! The flag words of the methods that take them, and what each bit means.
//! The daemon refuses a bit it does not know (`InvalidArgument`).

/// Flags of `GetXML`, as libvirt numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XmlFlags(pub u32);

impl XmlFlags {
    /// Include security-sensitive data (accepted; lxvirt keeps none yet).
    pub const SECURE: u32 = 1;
    /// The persistent definition rather than the live one.
    pub const INACTIVE: u32 = 2;
    pub const ALL: u32 = Self::SECURE | Self::INACTIVE;

    pub fn inactive(self) -> bool {
        self.0 & Self::INACTIVE != 0
    }
}

/// Flags of `Undefine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UndefineFlags(pub u32);

impl UndefineFlags {
    /// Keep the domain's writable layer (lxvirt's own bit, clear of
    /// libvirt's undefine flags): its files stay in the image store, and a
    /// domain defined again with the same name and image starts on them.
    pub const KEEP_WRITABLE_LAYER: u32 = 1 << 16;
    pub const ALL: u32 = Self::KEEP_WRITABLE_LAYER;

    pub fn keep_writable_layer(self) -> bool {
        self.0 & Self::KEEP_WRITABLE_LAYER != 0
    }
}

/// Flags of `AttachDevice` and `DetachDevice`: what they change, as
/// libvirt's `AFFECT_*`. None (`CURRENT`) means the running instance if
/// the domain runs, else its persistent definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AffectFlags(pub u32);

impl AffectFlags {
    pub const CURRENT: u32 = 0;
    pub const LIVE: u32 = 1;
    pub const CONFIG: u32 = 2;
    pub const ALL: u32 = Self::LIVE | Self::CONFIG;
}
