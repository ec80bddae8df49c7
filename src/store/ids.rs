//! The domain's row ids ([`crate::domain::ids::Id`]) as columns: read and bound
//! as the `BIGINT` they are, on either backend.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Encode, Type};

use crate::domain::ids::Id;

impl<K, D: Database> Type<D> for Id<K>
where
    i64: Type<D>,
{
    fn type_info() -> D::TypeInfo {
        <i64 as Type<D>>::type_info()
    }

    fn compatible(ty: &D::TypeInfo) -> bool {
        <i64 as Type<D>>::compatible(ty)
    }
}

impl<'r, K, D: Database> Decode<'r, D> for Id<K>
where
    i64: Decode<'r, D>,
{
    fn decode(value: D::ValueRef<'r>) -> Result<Self, BoxDynError> {
        <i64 as Decode<'r, D>>::decode(value).map(Id::new)
    }
}

impl<'q, K, D: Database> Encode<'q, D> for Id<K>
where
    i64: Encode<'q, D>,
{
    fn encode_by_ref(&self, buf: &mut D::ArgumentBuffer<'q>) -> Result<IsNull, BoxDynError> {
        self.get().encode_by_ref(buf)
    }
}
