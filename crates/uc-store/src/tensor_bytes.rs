//! One output tensor's full row-major bytes as a reader hands them to a writer: borrowed runs of the
//! input mappings when the tensor lies contiguously there (a ZeRO partition, a native or DCP chunk),
//! else one buffer merged from its pieces. Writers take the runs as they are, so contiguous tensors
//! go from the input's page cache to the output's without an intermediate copy.

use std::borrow::Cow;
use uc_schema::DType;
use uc_torch::PtTensor;

/// The bytes of one tensor, in order.
#[derive(Debug)]
pub enum TensorBytes<'a> {
    /// Consecutive runs borrowed from the input (their concatenation is the tensor).
    Runs(Vec<&'a [u8]>),
    /// A buffer assembled by a merge (strided pieces, replicas, dtype conversion).
    Owned(Vec<u8>),
}

impl<'a> TensorBytes<'a> {
    /// Total bytes.
    pub fn len(&self) -> usize {
        match self {
            TensorBytes::Runs(r) => r.iter().map(|b| b.len()).sum(),
            TensorBytes::Owned(v) => v.len(),
        }
    }

    /// True when the tensor has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The runs in order (one for an owned buffer).
    pub fn runs(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let (runs, owned): (&[&'a [u8]], Option<&[u8]>) = match self {
            TensorBytes::Runs(r) => (r, None),
            TensorBytes::Owned(v) => (&[], Some(v)),
        };
        runs.iter().copied().chain(owned)
    }

    /// The bytes as one slice: borrowed when there is a single run, else joined.
    pub fn contiguous(&self) -> Cow<'_, [u8]> {
        match self {
            TensorBytes::Runs(r) if r.len() == 1 => Cow::Borrowed(r[0]),
            TensorBytes::Runs(r) => Cow::Owned(r.concat()),
            TensorBytes::Owned(v) => Cow::Borrowed(v),
        }
    }

    /// A `.pt` tensor over these bytes (`requires_grad=False`): borrowed when they are one slice,
    /// else streamed run by run into the archive.
    pub fn pt_tensor(&self, dtype: DType, shape: Vec<u64>) -> PtTensor<'_> {
        match self {
            TensorBytes::Runs(r) if r.len() != 1 => PtTensor::streamed(dtype, shape, move |w| {
                r.iter().try_for_each(|b| w.write_all(b))
            }),
            TensorBytes::Runs(r) => PtTensor::from_bytes(dtype, shape, r[0]),
            TensorBytes::Owned(v) => PtTensor::from_bytes(dtype, shape, v),
        }
    }

    /// The bytes as an owned buffer.
    pub fn into_vec(mut self) -> Vec<u8> {
        match &mut self {
            TensorBytes::Runs(r) => r.concat(),
            TensorBytes::Owned(v) => std::mem::take(v),
        }
    }
}

/// Done with the bytes: the pages holding borrowed runs leave this process's page tables
/// ([`uc_torch::mapped::forget`]; the page cache keeps them), so a conversion's resident set stays
/// at the tensors in flight rather than growing to the size of its input.
impl Drop for TensorBytes<'_> {
    fn drop(&mut self) {
        if let TensorBytes::Runs(r) = self {
            r.iter().for_each(|run| uc_torch::mapped::forget(run));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_owned_agree() {
        let a = [1u8, 2, 3];
        let b = [4u8, 5];
        let r = TensorBytes::Runs(vec![&a, &b]);
        assert_eq!(r.len(), 5);
        assert_eq!(r.runs().collect::<Vec<_>>(), vec![&a[..], &b[..]]);
        assert_eq!(&*r.contiguous(), &[1, 2, 3, 4, 5]);
        let o = TensorBytes::Owned(vec![1, 2, 3, 4, 5]);
        assert_eq!(o.runs().count(), 1);
        assert!(matches!(o.contiguous(), Cow::Borrowed(_)));
        assert_eq!(r.into_vec(), o.into_vec());
        assert!(TensorBytes::Runs(vec![]).is_empty());
    }
}
