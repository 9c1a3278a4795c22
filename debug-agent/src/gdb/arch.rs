//! Our x86_64 `Arch` for gdbstub: the core, x87 and SSE registers gdb expects, plus fs_base,
//! gs_base, cr0, cr2, cr3, cr4, cr8 and efer (gdbstub_arch's x86_64 has none of these), with the
//! target description that tells gdb their numbers.

use std::num::NonZeroUsize;

use gdbstub::arch::{Arch, RegId, Registers};
use hv_core::VcpuRegisters;

/// Register numbers (in target-description order) that stop replies expedite.
pub const REG_RBP: usize = 6;
/// rsp.
pub const REG_RSP: usize = 7;
/// rip.
pub const REG_RIP: usize = 16;

/// The x86_64 register file as gdb sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HvRegisters {
    /// rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8..r15 (gdb's order).
    pub gpr: [u64; 16],
    /// Instruction pointer.
    pub rip: u64,
    /// Flags.
    pub eflags: u32,
    /// cs, ss, ds, es, fs, gs selectors.
    pub segments: [u32; 6],
    /// st0..st7, 80-bit.
    pub st: [[u8; 10]; 8],
    /// fctrl, fstat, ftag, fiseg, fioff, foseg, fooff, fop.
    pub fpu_control: [u32; 8],
    /// xmm0..xmm15.
    pub xmm: [u128; 16],
    /// SSE control/status.
    pub mxcsr: u32,
    /// FS base.
    pub fs_base: u64,
    /// GS base.
    pub gs_base: u64,
    /// cr0, cr2, cr3, cr4, cr8, efer.
    pub system: [u64; 6],
}

impl HvRegisters {
    /// Converts KVM's register state.
    pub fn from_kvm(r: &VcpuRegisters) -> HvRegisters {
        let g = &r.regs;
        let s = &r.sregs;
        let f = &r.fpu;
        let mut st = [[0u8; 10]; 8];
        for (dst, src) in st.iter_mut().zip(f.fpr.iter()) {
            dst.copy_from_slice(&src[..10]);
        }
        HvRegisters {
            gpr: [
                g.rax, g.rbx, g.rcx, g.rdx, g.rsi, g.rdi, g.rbp, g.rsp, g.r8, g.r9, g.r10, g.r11,
                g.r12, g.r13, g.r14, g.r15,
            ],
            rip: g.rip,
            eflags: g.rflags as u32,
            segments: [s.cs, s.ss, s.ds, s.es, s.fs, s.gs].map(|seg| u32::from(seg.selector)),
            st,
            fpu_control: [
                u32::from(f.fcw),
                u32::from(f.fsw),
                u32::from(f.ftwx),
                0,
                f.last_ip as u32,
                0,
                f.last_dp as u32,
                u32::from(f.last_opcode),
            ],
            xmm: f.xmm.map(u128::from_le_bytes),
            mxcsr: f.mxcsr,
            fs_base: s.fs.base,
            gs_base: s.gs.base,
            system: [s.cr0, s.cr2, s.cr3, s.cr4, s.cr8, s.efer],
        }
    }

    /// Writes these values back into KVM's register state (selectors are not changed: a
    /// selector write would need a descriptor load).
    pub fn to_kvm(&self, r: &mut VcpuRegisters) {
        let g = &mut r.regs;
        [
            g.rax, g.rbx, g.rcx, g.rdx, g.rsi, g.rdi, g.rbp, g.rsp, g.r8, g.r9, g.r10, g.r11,
            g.r12, g.r13, g.r14, g.r15,
        ] = self.gpr;
        g.rip = self.rip;
        g.rflags = (g.rflags & !0xffff_ffff) | u64::from(self.eflags);
        let s = &mut r.sregs;
        s.fs.base = self.fs_base;
        s.gs.base = self.gs_base;
        [s.cr0, s.cr2, s.cr3, s.cr4, s.cr8, s.efer] = self.system;
        let f = &mut r.fpu;
        for (dst, src) in f.fpr.iter_mut().zip(self.st.iter()) {
            dst[..10].copy_from_slice(src);
        }
        f.fcw = self.fpu_control[0] as u16;
        f.fsw = self.fpu_control[1] as u16;
        f.ftwx = self.fpu_control[2] as u8;
        f.last_opcode = self.fpu_control[7] as u16;
        f.xmm = self.xmm.map(u128::to_le_bytes);
        f.mxcsr = self.mxcsr;
    }
}

impl Registers for HvRegisters {
    type ProgramCounter = u64;

    fn pc(&self) -> u64 {
        self.rip
    }

    fn gdb_serialize(&self, mut write_byte: impl FnMut(Option<u8>)) {
        let mut put = |bytes: &[u8]| bytes.iter().for_each(|b| write_byte(Some(*b)));
        self.gpr.iter().for_each(|r| put(&r.to_le_bytes()));
        put(&self.rip.to_le_bytes());
        put(&self.eflags.to_le_bytes());
        self.segments.iter().for_each(|r| put(&r.to_le_bytes()));
        self.st.iter().for_each(|r| put(r));
        self.fpu_control.iter().for_each(|r| put(&r.to_le_bytes()));
        self.xmm.iter().for_each(|r| put(&r.to_le_bytes()));
        put(&self.mxcsr.to_le_bytes());
        put(&self.fs_base.to_le_bytes());
        put(&self.gs_base.to_le_bytes());
        self.system.iter().for_each(|r| put(&r.to_le_bytes()));
    }

    fn gdb_deserialize(&mut self, bytes: &[u8]) -> Result<(), ()> {
        if bytes.len() != SERIALIZED_LEN {
            return Err(());
        }
        let mut at = 0;
        let mut take = |n: usize| {
            let slice = &bytes[at..at + n];
            at += n;
            slice
        };
        let u64_of = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
        let u32_of = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap_or_default());
        for r in self.gpr.iter_mut() {
            *r = u64_of(take(8));
        }
        self.rip = u64_of(take(8));
        self.eflags = u32_of(take(4));
        for r in self.segments.iter_mut() {
            *r = u32_of(take(4));
        }
        for r in self.st.iter_mut() {
            r.copy_from_slice(take(10));
        }
        for r in self.fpu_control.iter_mut() {
            *r = u32_of(take(4));
        }
        for r in self.xmm.iter_mut() {
            *r = u128::from_le_bytes(take(16).try_into().unwrap_or_default());
        }
        self.mxcsr = u32_of(take(4));
        self.fs_base = u64_of(take(8));
        self.gs_base = u64_of(take(8));
        for r in self.system.iter_mut() {
            *r = u64_of(take(8));
        }
        Ok(())
    }
}

/// Bytes in a `g` packet's register block.
pub const SERIALIZED_LEN: usize =
    16 * 8 + 8 + 4 + 6 * 4 + 8 * 10 + 8 * 4 + 16 * 16 + 4 + 8 + 8 + 6 * 8;

/// A register number in target-description order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HvRegId(pub usize);

impl RegId for HvRegId {
    fn from_raw_id(id: usize) -> Option<(Self, Option<NonZeroUsize>)> {
        (id < REGISTER_COUNT).then_some((HvRegId(id), None))
    }
    fn to_raw_id(&self) -> Option<usize> {
        Some(self.0)
    }
}

/// Registers in the description.
pub const REGISTER_COUNT: usize = 16 + 1 + 1 + 6 + 8 + 8 + 16 + 1 + 2 + 6;

/// The hvdk x86_64 architecture.
#[derive(Debug)]
pub enum HvX86_64 {}

impl Arch for HvX86_64 {
    type Usize = u64;
    type Registers = HvRegisters;
    type RegId = HvRegId;
    type BreakpointKind = usize;

    fn target_description_xml() -> Option<&'static str> {
        Some(TARGET_XML)
    }
}

/// gdb's target description: the standard i386 core and SSE features (so stock gdb recognises
/// the layout), the segment bases, and a system feature with the control registers and EFER.
pub const TARGET_XML: &str = r#"<?xml version="1.0"?>
<!DOCTYPE target SYSTEM "gdb-target.dtd">
<target version="1.0">
  <architecture>i386:x86-64</architecture>
  <feature name="org.gnu.gdb.i386.core">
    <flags id="i386_eflags" size="4">
      <field name="CF" start="0" end="0"/>
      <field name="" start="1" end="1"/>
      <field name="PF" start="2" end="2"/>
      <field name="AF" start="4" end="4"/>
      <field name="ZF" start="6" end="6"/>
      <field name="SF" start="7" end="7"/>
      <field name="TF" start="8" end="8"/>
      <field name="IF" start="9" end="9"/>
      <field name="DF" start="10" end="10"/>
      <field name="OF" start="11" end="11"/>
    </flags>
    <reg name="rax" bitsize="64" type="int64" regnum="0"/>
    <reg name="rbx" bitsize="64" type="int64"/>
    <reg name="rcx" bitsize="64" type="int64"/>
    <reg name="rdx" bitsize="64" type="int64"/>
    <reg name="rsi" bitsize="64" type="int64"/>
    <reg name="rdi" bitsize="64" type="int64"/>
    <reg name="rbp" bitsize="64" type="data_ptr"/>
    <reg name="rsp" bitsize="64" type="data_ptr"/>
    <reg name="r8" bitsize="64" type="int64"/>
    <reg name="r9" bitsize="64" type="int64"/>
    <reg name="r10" bitsize="64" type="int64"/>
    <reg name="r11" bitsize="64" type="int64"/>
    <reg name="r12" bitsize="64" type="int64"/>
    <reg name="r13" bitsize="64" type="int64"/>
    <reg name="r14" bitsize="64" type="int64"/>
    <reg name="r15" bitsize="64" type="int64"/>
    <reg name="rip" bitsize="64" type="code_ptr"/>
    <reg name="eflags" bitsize="32" type="i386_eflags"/>
    <reg name="cs" bitsize="32" type="int32"/>
    <reg name="ss" bitsize="32" type="int32"/>
    <reg name="ds" bitsize="32" type="int32"/>
    <reg name="es" bitsize="32" type="int32"/>
    <reg name="fs" bitsize="32" type="int32"/>
    <reg name="gs" bitsize="32" type="int32"/>
    <reg name="st0" bitsize="80" type="i387_ext"/>
    <reg name="st1" bitsize="80" type="i387_ext"/>
    <reg name="st2" bitsize="80" type="i387_ext"/>
    <reg name="st3" bitsize="80" type="i387_ext"/>
    <reg name="st4" bitsize="80" type="i387_ext"/>
    <reg name="st5" bitsize="80" type="i387_ext"/>
    <reg name="st6" bitsize="80" type="i387_ext"/>
    <reg name="st7" bitsize="80" type="i387_ext"/>
    <reg name="fctrl" bitsize="32" type="int" group="float"/>
    <reg name="fstat" bitsize="32" type="int" group="float"/>
    <reg name="ftag" bitsize="32" type="int" group="float"/>
    <reg name="fiseg" bitsize="32" type="int" group="float"/>
    <reg name="fioff" bitsize="32" type="int" group="float"/>
    <reg name="foseg" bitsize="32" type="int" group="float"/>
    <reg name="fooff" bitsize="32" type="int" group="float"/>
    <reg name="fop" bitsize="32" type="int" group="float"/>
  </feature>
  <feature name="org.gnu.gdb.i386.sse">
    <vector id="v8bf16" type="bfloat16" count="8"/>
    <vector id="v4f" type="ieee_single" count="4"/>
    <vector id="v2d" type="ieee_double" count="2"/>
    <vector id="v16i8" type="int8" count="16"/>
    <vector id="v8i16" type="int16" count="8"/>
    <vector id="v4i32" type="int32" count="4"/>
    <vector id="v2i64" type="int64" count="2"/>
    <union id="vec128">
      <field name="v8_bfloat16" type="v8bf16"/>
      <field name="v4_float" type="v4f"/>
      <field name="v2_double" type="v2d"/>
      <field name="v16_int8" type="v16i8"/>
      <field name="v8_int16" type="v8i16"/>
      <field name="v4_int32" type="v4i32"/>
      <field name="v2_int64" type="v2i64"/>
      <field name="uint128" type="uint128"/>
    </union>
    <flags id="i386_mxcsr" size="4">
      <field name="IE" start="0" end="0"/>
      <field name="DE" start="1" end="1"/>
      <field name="ZE" start="2" end="2"/>
      <field name="OE" start="3" end="3"/>
      <field name="UE" start="4" end="4"/>
      <field name="PE" start="5" end="5"/>
      <field name="DAZ" start="6" end="6"/>
      <field name="IM" start="7" end="7"/>
      <field name="DM" start="8" end="8"/>
      <field name="ZM" start="9" end="9"/>
      <field name="OM" start="10" end="10"/>
      <field name="UM" start="11" end="11"/>
      <field name="PM" start="12" end="12"/>
      <field name="FZ" start="15" end="15"/>
    </flags>
    <reg name="xmm0" bitsize="128" type="vec128" regnum="40"/>
    <reg name="xmm1" bitsize="128" type="vec128"/>
    <reg name="xmm2" bitsize="128" type="vec128"/>
    <reg name="xmm3" bitsize="128" type="vec128"/>
    <reg name="xmm4" bitsize="128" type="vec128"/>
    <reg name="xmm5" bitsize="128" type="vec128"/>
    <reg name="xmm6" bitsize="128" type="vec128"/>
    <reg name="xmm7" bitsize="128" type="vec128"/>
    <reg name="xmm8" bitsize="128" type="vec128"/>
    <reg name="xmm9" bitsize="128" type="vec128"/>
    <reg name="xmm10" bitsize="128" type="vec128"/>
    <reg name="xmm11" bitsize="128" type="vec128"/>
    <reg name="xmm12" bitsize="128" type="vec128"/>
    <reg name="xmm13" bitsize="128" type="vec128"/>
    <reg name="xmm14" bitsize="128" type="vec128"/>
    <reg name="xmm15" bitsize="128" type="vec128"/>
    <reg name="mxcsr" bitsize="32" type="i386_mxcsr" group="vector"/>
  </feature>
  <feature name="org.gnu.gdb.i386.segments">
    <reg name="fs_base" bitsize="64" type="int" regnum="57"/>
    <reg name="gs_base" bitsize="64" type="int"/>
  </feature>
  <feature name="org.hvdk.x86_64.system">
    <reg name="cr0" bitsize="64" type="int" group="system" regnum="59"/>
    <reg name="cr2" bitsize="64" type="int" group="system"/>
    <reg name="cr3" bitsize="64" type="int" group="system"/>
    <reg name="cr4" bitsize="64" type="int" group="system"/>
    <reg name="cr8" bitsize="64" type="int" group="system"/>
    <reg name="efer" bitsize="64" type="int" group="system"/>
  </feature>
</target>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialisation_round_trips_and_has_the_described_length() {
        let mut regs = HvRegisters::default();
        regs.gpr[7] = 0x1234;
        regs.rip = 0x10_0000;
        regs.xmm[3] = u128::MAX - 5;
        regs.system[2] = 0x9000;
        let mut bytes = Vec::new();
        regs.gdb_serialize(|b| bytes.push(b.unwrap()));
        assert_eq!(bytes.len(), SERIALIZED_LEN);
        let mut back = HvRegisters::default();
        back.gdb_deserialize(&bytes).unwrap();
        assert_eq!(back, regs);
        assert!(back.gdb_deserialize(&bytes[1..]).is_err());
    }

    #[test]
    fn description_numbers_match_the_serialisation() {
        assert_eq!(TARGET_XML.matches("<reg ").count(), REGISTER_COUNT);
        let reg_bits: usize = TARGET_XML
            .lines()
            .filter(|l| l.trim_start().starts_with("<reg "))
            .map(|l| {
                l.split("bitsize=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
                    .parse::<usize>()
                    .unwrap()
            })
            .sum();
        assert_eq!(reg_bits / 8, SERIALIZED_LEN);
        assert!(TARGET_XML.contains("regnum=\"40\"")); // xmm0 after 40 core registers
    }
}
