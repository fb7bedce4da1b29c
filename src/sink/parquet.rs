//! A small typed table and its Parquet encoding (one row group, snappy, every column optional).

use std::sync::Arc;

use parquet::basic::{Compression, LogicalType, Repetition, TimeUnit, Type as Physical};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int32Type, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;

/// A column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// UTF-8 text (`string` in Athena).
    Utf8,
    /// 64-bit float (`double`).
    Double,
    /// 32-bit integer (`int`).
    Int32,
    /// 64-bit integer (`bigint`).
    Int64,
    /// Boolean (`boolean`).
    Bool,
    /// UTC instant in milliseconds (`timestamp`).
    TimestampMillis,
}

/// One value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Text.
    Str(String),
    /// A float.
    F64(f64),
    /// A 32-bit integer.
    I32(i32),
    /// A 64-bit integer (also a timestamp's milliseconds).
    I64(i64),
    /// A flag.
    Bool(bool),
}

/// A named, typed column; a `None` cell is null.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// The column's name.
    pub name: String,
    /// Its type.
    pub kind: ColumnType,
    /// One cell per row.
    pub cells: Vec<Option<Cell>>,
}

/// The Parquet schema field of `c`.
fn field(c: &Column) -> Result<Type, ParquetError> {
    let (physical, logical) = match c.kind {
        ColumnType::Utf8 => (Physical::BYTE_ARRAY, Some(LogicalType::String)),
        ColumnType::Double => (Physical::DOUBLE, None),
        ColumnType::Int32 => (Physical::INT32, None),
        ColumnType::Int64 => (Physical::INT64, None),
        ColumnType::Bool => (Physical::BOOLEAN, None),
        ColumnType::TimestampMillis => (
            Physical::INT64,
            Some(LogicalType::timestamp(true, TimeUnit::MILLIS)),
        ),
    };
    Type::primitive_type_builder(&c.name, physical)
        .with_repetition(Repetition::OPTIONAL)
        .with_logical_type(logical)
        .build()
}

/// `columns` (all of one length) as a Parquet file. A cell of another type than its column is
/// written as null.
pub fn encode(columns: &[Column]) -> Result<Vec<u8>, ParquetError> {
    let fields = columns
        .iter()
        .map(|c| field(c).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let schema = Type::group_type_builder("record")
        .with_fields(fields)
        .build()?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer = SerializedFileWriter::new(Vec::new(), Arc::new(schema), Arc::new(props))?;
    let mut group = writer.next_row_group()?;
    let mut next = columns.iter();
    while let Some(mut out) = group.next_column()? {
        let Some(c) = next.next() else {
            return Err(ParquetError::General("more columns than the schema".into()));
        };
        let mut defs = Vec::with_capacity(c.cells.len());
        macro_rules! write {
            ($t:ty, $pat:pat => $v:expr) => {{
                let mut values = Vec::with_capacity(c.cells.len());
                for cell in &c.cells {
                    match cell {
                        Some($pat) => {
                            values.push($v);
                            defs.push(1);
                        }
                        _ => defs.push(0),
                    }
                }
                out.typed::<$t>().write_batch(&values, Some(&defs), None)?;
            }};
        }
        match c.kind {
            ColumnType::Utf8 => write!(ByteArrayType, Cell::Str(s) => ByteArray::from(s.as_str())),
            ColumnType::Double => write!(DoubleType, Cell::F64(v) => *v),
            ColumnType::Int32 => write!(Int32Type, Cell::I32(v) => *v),
            ColumnType::Int64 | ColumnType::TimestampMillis => {
                write!(Int64Type, Cell::I64(v) => *v)
            }
            ColumnType::Bool => write!(BoolType, Cell::Bool(v) => *v),
        }
        out.close()?;
    }
    group.close()?;
    writer.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;

    #[test]
    fn columns_read_back_with_their_types_and_nulls() {
        let columns = vec![
            Column {
                name: "event_id".into(),
                kind: ColumnType::Utf8,
                cells: vec![Some(Cell::Str("a".into())), None],
            },
            Column {
                name: "event_time".into(),
                kind: ColumnType::TimestampMillis,
                cells: vec![Some(Cell::I64(1_780_000_000_123)), Some(Cell::I64(0))],
            },
            Column {
                name: "shoes_/shoes".into(),
                kind: ColumnType::Double,
                // A cell of the wrong type is null.
                cells: vec![Some(Cell::F64(1.5)), Some(Cell::Str("x".into()))],
            },
            Column {
                name: "flag".into(),
                kind: ColumnType::Bool,
                cells: vec![None, Some(Cell::Bool(true))],
            },
            Column {
                name: "kafka_partition".into(),
                kind: ColumnType::Int32,
                cells: vec![Some(Cell::I32(3)), Some(Cell::I32(3))],
            },
        ];
        let bytes = encode(&columns).expect("encode");
        let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).expect("parquet");
        let rows: Vec<Vec<(String, Field)>> = reader
            .get_row_iter(None)
            .expect("rows")
            .map(|r| {
                r.expect("row")
                    .get_column_iter()
                    .map(|(n, f)| (n.clone(), f.clone()))
                    .collect()
            })
            .collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][0], ("event_id".into(), Field::Str("a".into())));
        assert_eq!(rows[1][0].1, Field::Null);
        assert_eq!(rows[0][1].1, Field::TimestampMillis(1_780_000_000_123));
        assert_eq!(rows[0][2], ("shoes_/shoes".into(), Field::Double(1.5)));
        assert_eq!(rows[1][2].1, Field::Null);
        assert_eq!(
            (rows[0][3].1.clone(), rows[1][3].1.clone()),
            (Field::Null, Field::Bool(true))
        );
        assert_eq!(rows[1][4].1, Field::Int(3));
    }
}
