//! The codec of every generated client and server (selected in `build.rs` with `codec_path`):
//! tonic-prost's encoding, with decode errors given the code gRPC's guide assigns by who is at
//! fault. A request the server cannot read is the caller's error, INVALID_ARGUMENT; a response
//! the client cannot read is the server's, INTERNAL (tonic-prost's code for both).
//!
//! Owns: that mapping, and the list of which message is a request ([`Malformed`]). Never
//! changes the bytes on the wire: encoding is tonic-prost's own, so peers built on plain
//! tonic-prost interoperate.

use prost::Message;
use std::marker::PhantomData;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};

/// The code a message that does not decode is refused with. Every message a service method
/// takes or returns implements it (below), so a new method without its line does not compile.
pub trait Malformed {
    /// INVALID_ARGUMENT for requests (decoded by the server), INTERNAL for responses.
    const CODE: Code;
}

macro_rules! malformed {
    ($code:ident: $($message:ident),+ $(,)?) => {
        $(impl Malformed for crate::v1::$message {
            const CODE: Code = Code::$code;
        })+
    };
}

malformed!(InvalidArgument:
    JoinRequest, HeartbeatRequest, ReleaseRequest, LeaveRequest,
    StatusRequest, FlowRequest, DrainRequest, RegionsRequest, RegionStatusRequest,
);
malformed!(Internal:
    JoinResponse, HeartbeatResponse, ReleaseResponse, LeaveResponse,
    StatusResponse, FlowResponse, DrainResponse, RegionsResponse, RegionStatusResponse,
);

/// [`tonic_prost::ProstCodec`] with decode errors coded by [`Malformed`].
#[derive(Debug, Clone)]
pub struct LockstepCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LockstepCodec<T, U> {
    fn default() -> Self {
        LockstepCodec(PhantomData)
    }
}

impl<T, U> Codec for LockstepCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Malformed + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = LockstepDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        LockstepDecoder(PhantomData)
    }
}

/// Decodes `U`, refusing a malformed message with `U::CODE`.
#[derive(Debug, Clone)]
pub struct LockstepDecoder<U>(PhantomData<U>);

impl<U: Message + Malformed + Default> Decoder for LockstepDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|e| {
            let what = std::any::type_name::<U>()
                .rsplit("::")
                .next()
                .unwrap_or("message");
            Status::new(U::CODE, format!("malformed {what}: {e}"))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{HeartbeatRequest, HeartbeatResponse};

    #[test]
    fn requests_are_the_callers_fault_and_responses_the_servers() {
        assert_eq!(<HeartbeatRequest as Malformed>::CODE, Code::InvalidArgument);
        assert_eq!(<HeartbeatResponse as Malformed>::CODE, Code::Internal);
    }
}
