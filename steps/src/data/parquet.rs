//! Reading Parquet files (hub datasets are often Parquet) row by row into JSON objects.

use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use serde_json::Value as Json;

use super::error::Pos;

/// Why a Parquet file could not be read.
pub enum ParquetError {
    /// The file could not be opened.
    Io(std::io::Error),
    /// The file (or its row at this position) is not valid Parquet.
    Invalid(Pos, String),
}

/// The rows of the Parquet file at `path`, each a JSON object of its columns.
pub fn read(path: &Path) -> Result<Vec<Json>, ParquetError> {
    let handle = std::fs::File::open(path).map_err(ParquetError::Io)?;
    let invalid = |pos, e: parquet::errors::ParquetError| {
        ParquetError::Invalid(pos, format!("invalid Parquet: {e}"))
    };
    let reader = SerializedFileReader::new(handle).map_err(|e| invalid(Pos::File, e))?;
    let mut rows = Vec::new();
    for (i, row) in reader
        .get_row_iter(None)
        .map_err(|e| invalid(Pos::File, e))?
        .enumerate()
    {
        let row = row.map_err(|e| invalid(Pos::Row(i + 1), e))?;
        rows.push(row.to_json_value());
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use parquet::basic::Compression;
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    use crate::data::files::{Several, find, read_rows};
    use crate::data::format::{Sample, resolve};

    /// Writes a Snappy-compressed Parquet file of alpaca rows, as hub datasets ship them.
    fn write_alpaca(path: &std::path::Path, rows: &[(&str, &str)]) {
        let schema = Arc::new(
            parse_message_type(
                "message schema { REQUIRED BYTE_ARRAY instruction (UTF8); REQUIRED BYTE_ARRAY output (UTF8); }",
            )
            .unwrap(),
        );
        let props = Arc::new(
            WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .build(),
        );
        let file = std::fs::File::create(path).unwrap();
        let mut writer = SerializedFileWriter::new(file, schema, props).unwrap();
        let mut group = writer.next_row_group().unwrap();
        let mut column = 0;
        while let Some(mut col) = group.next_column().unwrap() {
            let values: Vec<ByteArray> = rows
                .iter()
                .map(|r| ByteArray::from(if column == 0 { r.0 } else { r.1 }))
                .collect();
            col.typed::<ByteArrayType>()
                .write_batch(&values, None, None)
                .unwrap();
            col.close().unwrap();
            column += 1;
        }
        group.close().unwrap();
        writer.close().unwrap();
    }

    #[test]
    fn parquet_rows_read_as_objects() {
        let dir = tempfile::tempdir().unwrap();
        write_alpaca(
            &dir.path().join("train-00000-of-00001.parquet"),
            &[("Say hi", "Hi!"), ("Name a colour", "Blue, 파랑.")],
        );
        let files = find(
            "hub",
            Some(dir.path()),
            Some("train-*.parquet"),
            Several::Error,
        )
        .unwrap();
        let rows = read_rows(&files[0]).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[1].origin.to_string(),
            "`hub/train-00000-of-00001.parquet` row 2"
        );
        let layout = resolve(
            Default::default(),
            &Default::default(),
            &Default::default(),
            rows.first(),
        )
        .unwrap();
        let Sample::Chat(conv) = layout.convert(&rows[1]).unwrap() else {
            panic!()
        };
        assert_eq!(conv.messages[1].content, "Blue, 파랑.");
    }
}
