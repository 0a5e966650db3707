//! A load-time rewrite of the int8 export's embedding lookups, done on the ONNX protobuf
//! bytes before ONNX Runtime sees them.
//!
//! The export stores its weights as int8 plus per-row scales and dequantizes them in the
//! graph: `Gather(Mul(Cast(q), scale), ids)`. ONNX Runtime's constant folding turns that
//! `Mul(Cast(q), scale)` into an f32 copy of the whole table before the first run: for the
//! 30,522 x 384 word embeddings, 45 MiB resident for the life of the process, to look up a
//! few dozen rows per batch. This module rewrites each such lookup to gather first and
//! dequantize only the gathered rows:
//! `Mul(Cast(Gather(q, ids)), Gather(scale, ids))`. The two are equal element for element
//! (a row of `q * scale` is the row of `q` times the row's scale), so the vectors do not
//! change; the table stays int8 (11 MiB).
//!
//! Only the protobuf wire format is handled here (varints and length-delimited fields); every
//! field this module does not rewrite is copied byte for byte. A graph that does not have the
//! pattern is left alone.
//!
//! Must not import: ONNX Runtime, the tokenizer, anything outside this crate.

use std::collections::HashMap;

/// ONNX `TensorProto.DataType` values this module reads.
const FLOAT: u64 = 1;
const UINT8: u64 = 2;
const INT8: u64 = 3;

/// Field numbers of the ONNX messages this module reads or writes.
mod field {
    pub const MODEL_GRAPH: u32 = 7;
    pub const GRAPH_NODE: u32 = 1;
    pub const GRAPH_INITIALIZER: u32 = 5;
    pub const GRAPH_OUTPUT: u32 = 12;
    pub const VALUE_INFO_NAME: u32 = 1;
    pub const NODE_INPUT: u32 = 1;
    pub const NODE_OUTPUT: u32 = 2;
    pub const NODE_NAME: u32 = 3;
    pub const NODE_OP_TYPE: u32 = 4;
    pub const NODE_ATTRIBUTE: u32 = 5;
    pub const NODE_DOMAIN: u32 = 7;
    pub const ATTR_NAME: u32 = 1;
    pub const ATTR_I: u32 = 3;
    pub const ATTR_TYPE: u32 = 20;
    pub const TENSOR_DIMS: u32 = 1;
    pub const TENSOR_DATA_TYPE: u32 = 2;
    pub const TENSOR_NAME: u32 = 8;
}

/// `AttributeProto.AttributeType.INT`.
const ATTR_INT: u64 = 2;

/// Rewrites every `Gather(Mul(Cast(q), scale), ids)` lookup of a per-row-quantized table to
/// `Mul(Cast(Gather(q, ids)), Gather(scale, ids))`. Returns the new model bytes and how many
/// lookups were rewritten, or `None` when the graph has no such lookup.
pub(crate) fn gather_before_dequantize(model: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let top = fields(model)?;
    let graphs: Vec<&Field<'_>> = top
        .iter()
        .filter(|f| f.number == field::MODEL_GRAPH)
        .collect();
    // Several graph fields would be merged by the parser; not worth handling.
    let [graph] = graphs.as_slice() else {
        return Ok(None);
    };
    let Some((new_graph, rewritten)) = rewrite_graph(graph.body()?)? else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(model.len());
    for f in &top {
        if f.number == field::MODEL_GRAPH {
            put_bytes(&mut out, field::MODEL_GRAPH, &new_graph);
        } else {
            out.extend_from_slice(f.raw);
        }
    }
    Ok(Some((out, rewritten)))
}

/// A node of the graph, as far as the rewrite needs to know it.
struct Node {
    inputs: Vec<String>,
    outputs: Vec<String>,
    op: String,
    domain: String,
    /// Integer attributes by name.
    ints: HashMap<String, i64>,
}

impl Node {
    fn parse(body: &[u8]) -> Result<Self, String> {
        let mut node = Node {
            inputs: Vec::new(),
            outputs: Vec::new(),
            op: String::new(),
            domain: String::new(),
            ints: HashMap::new(),
        };
        for f in fields(body)? {
            match f.number {
                field::NODE_INPUT => node.inputs.push(f.string()?),
                field::NODE_OUTPUT => node.outputs.push(f.string()?),
                field::NODE_OP_TYPE => node.op = f.string()?,
                field::NODE_DOMAIN => node.domain = f.string()?,
                field::NODE_ATTRIBUTE => {
                    let attr = fields(f.body()?)?;
                    let name = attr.iter().find(|a| a.number == field::ATTR_NAME);
                    let value = attr.iter().find(|a| a.number == field::ATTR_I);
                    if let (Some(name), Some(value)) = (name, value) {
                        node.ints.insert(name.string()?, value.varint()? as i64);
                    }
                }
                _ => {}
            }
        }
        Ok(node)
    }

    fn is(&self, op: &str) -> bool {
        self.op == op && (self.domain.is_empty() || self.domain == "ai.onnx")
    }
}

/// An initializer's element type and shape.
struct Init {
    data_type: u64,
    dims: Vec<i64>,
}

/// One lookup to rewrite: the node indices to drop and the Gather to replace.
struct Lookup {
    cast: usize,
    mul: usize,
    gather: usize,
    table: String,
    scale: String,
    ids: String,
    out: String,
}

fn rewrite_graph(graph: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let parts = fields(graph)?;
    let mut nodes = Vec::new();
    let mut node_field = Vec::new();
    let mut inits: HashMap<String, Init> = HashMap::new();
    let mut uses: HashMap<String, usize> = HashMap::new();
    for (i, f) in parts.iter().enumerate() {
        match f.number {
            field::GRAPH_NODE => {
                let node = Node::parse(f.body()?)?;
                for input in &node.inputs {
                    *uses.entry(input.clone()).or_default() += 1;
                }
                node_field.push(i);
                nodes.push(node);
            }
            field::GRAPH_INITIALIZER => {
                let mut init = Init {
                    data_type: 0,
                    dims: Vec::new(),
                };
                let mut name = String::new();
                for t in fields(f.body()?)? {
                    match t.number {
                        field::TENSOR_NAME => name = t.string()?,
                        field::TENSOR_DATA_TYPE => init.data_type = t.varint()?,
                        field::TENSOR_DIMS => init.dims.extend(t.int64s()?),
                        _ => {}
                    }
                }
                inits.insert(name, init);
            }
            field::GRAPH_OUTPUT => {
                for v in fields(f.body()?)? {
                    if v.number == field::VALUE_INFO_NAME {
                        *uses.entry(v.string()?).or_default() += 1;
                    }
                }
            }
            _ => {}
        }
    }
    let producer: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.outputs.iter().map(move |o| (o.as_str(), i)))
        .collect();
    let used_once = |name: &str| uses.get(name).copied() == Some(1);

    let mut lookups = Vec::new();
    for (g, gather) in nodes.iter().enumerate() {
        if !gather.is("Gather")
            || gather.inputs.len() != 2
            || gather.outputs.len() != 1
            || gather.ints.get("axis").is_some_and(|&a| a != 0)
        {
            continue;
        }
        let data = &gather.inputs[0];
        let Some(&m) = producer.get(data.as_str()) else {
            continue;
        };
        let mul = &nodes[m];
        if !mul.is("Mul") || mul.inputs.len() != 2 || !used_once(data) {
            continue;
        }
        // The Cast's output and the scale, in either order.
        let found = [(0, 1), (1, 0)].into_iter().find_map(|(c, s)| {
            let cast_at = *producer.get(mul.inputs[c].as_str())?;
            let cast = &nodes[cast_at];
            let scale = &mul.inputs[s];
            let table = cast.inputs.first()?;
            let q = inits.get(table)?;
            let sc = inits.get(scale)?;
            let per_row = q.dims.len() == 2
                && matches!(q.data_type, INT8 | UINT8)
                && sc.data_type == FLOAT
                && sc.dims == [q.dims[0], 1];
            (cast.is("Cast")
                && cast.inputs.len() == 1
                && cast.ints.get("to") == Some(&(FLOAT as i64))
                && used_once(&mul.inputs[c])
                && per_row)
                .then(|| (cast_at, table.clone(), scale.clone()))
        });
        if let Some((cast, table, scale)) = found {
            lookups.push(Lookup {
                cast,
                mul: m,
                gather: g,
                table,
                scale,
                ids: gather.inputs[1].clone(),
                out: gather.outputs[0].clone(),
            });
        }
    }
    if lookups.is_empty() {
        return Ok(None);
    }

    let mut drop: Vec<usize> = Vec::new();
    let mut replace: HashMap<usize, Vec<u8>> = HashMap::new();
    for (k, l) in lookups.iter().enumerate() {
        drop.extend([node_field[l.cast], node_field[l.mul]]);
        let (q, s, f) = (
            format!("{}/strata_q", l.out),
            format!("{}/strata_scale", l.out),
            format!("{}/strata_f", l.out),
        );
        let mut nodes = Vec::new();
        let steps: [Step<'_>; 4] = [
            ("gather_q", "Gather", &[&l.table, &l.ids], &q, None),
            ("gather_scale", "Gather", &[&l.scale, &l.ids], &s, None),
            ("cast", "Cast", &[&q], &f, Some(FLOAT)),
            ("mul", "Mul", &[&f, &s], &l.out, None),
        ];
        for (name, op, inputs, output, to) in steps {
            put_bytes(
                &mut nodes,
                field::GRAPH_NODE,
                &encode_node(&format!("strata_lookup_{k}_{name}"), op, inputs, output, to),
            );
        }
        replace.insert(node_field[l.gather], nodes);
    }

    let mut out = Vec::with_capacity(graph.len());
    for (i, f) in parts.iter().enumerate() {
        if let Some(nodes) = replace.get(&i) {
            out.extend_from_slice(nodes);
        } else if !drop.contains(&i) {
            out.extend_from_slice(f.raw);
        }
    }
    Ok(Some((out, lookups.len())))
}

/// A node to write: name suffix, operator, inputs, output, and a Cast's target type.
type Step<'a> = (&'a str, &'a str, &'a [&'a String], &'a String, Option<u64>);

/// A `NodeProto` with the given inputs and one output; `to` adds a Cast's target type.
fn encode_node(name: &str, op: &str, inputs: &[&String], output: &str, to: Option<u64>) -> Vec<u8> {
    let mut node = Vec::new();
    for input in inputs {
        put_bytes(&mut node, field::NODE_INPUT, input.as_bytes());
    }
    put_bytes(&mut node, field::NODE_OUTPUT, output.as_bytes());
    put_bytes(&mut node, field::NODE_NAME, name.as_bytes());
    put_bytes(&mut node, field::NODE_OP_TYPE, op.as_bytes());
    if let Some(to) = to {
        let mut attr = Vec::new();
        put_bytes(&mut attr, field::ATTR_NAME, b"to");
        put_varint_field(&mut attr, field::ATTR_I, to);
        put_varint_field(&mut attr, field::ATTR_TYPE, ATTR_INT);
        put_bytes(&mut node, field::NODE_ATTRIBUTE, &attr);
    }
    node
}

/// One field of a protobuf message.
struct Field<'a> {
    number: u32,
    wire: u8,
    /// The whole field as encoded: key and value.
    raw: &'a [u8],
    /// The value: a varint's bytes, a fixed-size value, or a length-delimited body.
    value: &'a [u8],
}

impl<'a> Field<'a> {
    fn body(&self) -> Result<&'a [u8], String> {
        if self.wire == 2 {
            Ok(self.value)
        } else {
            Err(format!("field {} is not length-delimited", self.number))
        }
    }

    fn string(&self) -> Result<String, String> {
        String::from_utf8(self.body()?.to_vec())
            .map_err(|_| format!("field {} is not UTF-8", self.number))
    }

    fn varint(&self) -> Result<u64, String> {
        if self.wire != 0 {
            return Err(format!("field {} is not a varint", self.number));
        }
        varint(self.value, &mut 0)
    }

    /// A repeated int64, packed or not.
    fn int64s(&self) -> Result<Vec<i64>, String> {
        match self.wire {
            0 => Ok(vec![self.varint()? as i64]),
            2 => {
                let mut at = 0;
                let mut out = Vec::new();
                while at < self.value.len() {
                    out.push(varint(self.value, &mut at)? as i64);
                }
                Ok(out)
            }
            w => Err(format!("field {} has wire type {w}", self.number)),
        }
    }
}

/// Splits a message into its fields, in order.
fn fields(msg: &[u8]) -> Result<Vec<Field<'_>>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < msg.len() {
        let start = at;
        let key = varint(msg, &mut at)?;
        let number = u32::try_from(key >> 3).map_err(|_| "field number out of range")?;
        let wire = (key & 7) as u8;
        let value_start = at;
        let len = match wire {
            0 => {
                varint(msg, &mut at)?;
                0
            }
            1 => 8,
            2 => usize::try_from(varint(msg, &mut at)?).map_err(|_| "length out of range")?,
            5 => 4,
            w => return Err(format!("unsupported wire type {w}")),
        };
        let value_start = if wire == 2 { at } else { value_start };
        let end = at
            .checked_add(len)
            .filter(|&e| e <= msg.len())
            .ok_or("a field runs past the end of its message")?;
        at = end;
        out.push(Field {
            number,
            wire,
            raw: &msg[start..end],
            value: &msg[value_start..end],
        });
    }
    Ok(out)
}

fn varint(buf: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf
            .get(*at)
            .ok_or("a varint runs past the end of its message")?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("a varint is longer than ten bytes".into())
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint_field(out: &mut Vec<u8>, number: u32, v: u64) {
    put_varint(out, u64::from(number) << 3);
    put_varint(out, v);
}

fn put_bytes(out: &mut Vec<u8>, number: u32, body: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | 2);
    put_varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, data_type: u64, dims: &[i64]) -> Vec<u8> {
        let mut t = Vec::new();
        for &d in dims {
            put_varint_field(&mut t, field::TENSOR_DIMS, d as u64);
        }
        put_varint_field(&mut t, field::TENSOR_DATA_TYPE, data_type);
        put_bytes(&mut t, field::TENSOR_NAME, name.as_bytes());
        t
    }

    fn node(op: &str, inputs: &[&str], output: &str, to: Option<u64>) -> Vec<u8> {
        let inputs: Vec<String> = inputs.iter().map(|s| (*s).to_owned()).collect();
        let refs: Vec<&String> = inputs.iter().collect();
        encode_node(&format!("n_{output}"), op, &refs, output, to)
    }

    /// A model whose graph looks up `ids` in an int8 table with per-row scales, the way the
    /// export does, then adds the result to something else.
    fn model(scale_dims: &[i64], extra_use_of_table: bool) -> Vec<u8> {
        let mut g = Vec::new();
        put_bytes(
            &mut g,
            field::GRAPH_NODE,
            &node("Cast", &["w_q"], "w_f", Some(FLOAT)),
        );
        put_bytes(
            &mut g,
            field::GRAPH_NODE,
            &node("Mul", &["w_f", "w_s"], "w", None),
        );
        put_bytes(
            &mut g,
            field::GRAPH_NODE,
            &node("Gather", &["w", "ids"], "emb", None),
        );
        put_bytes(
            &mut g,
            field::GRAPH_NODE,
            &node("Add", &["emb", "pos"], "sum", None),
        );
        if extra_use_of_table {
            put_bytes(
                &mut g,
                field::GRAPH_NODE,
                &node("Identity", &["w"], "w2", None),
            );
        }
        put_bytes(&mut g, 2, b"graph");
        put_bytes(
            &mut g,
            field::GRAPH_INITIALIZER,
            &tensor("w_q", INT8, &[10, 4]),
        );
        put_bytes(
            &mut g,
            field::GRAPH_INITIALIZER,
            &tensor("w_s", FLOAT, scale_dims),
        );
        let mut m = Vec::new();
        put_varint_field(&mut m, 1, 8); // ir_version
        put_bytes(&mut m, field::MODEL_GRAPH, &g);
        put_bytes(&mut m, 2, b"producer");
        m
    }

    fn nodes_of(model: &[u8]) -> Vec<Node> {
        let top = fields(model).unwrap();
        let graph = top.iter().find(|f| f.number == field::MODEL_GRAPH).unwrap();
        fields(graph.body().unwrap())
            .unwrap()
            .iter()
            .filter(|f| f.number == field::GRAPH_NODE)
            .map(|f| Node::parse(f.body().unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn a_per_row_lookup_gathers_before_it_dequantizes() {
        let (out, n) = gather_before_dequantize(&model(&[10, 1], false))
            .unwrap()
            .unwrap();
        assert_eq!(n, 1);
        let nodes = nodes_of(&out);
        let ops: Vec<(&str, Vec<&str>, &str)> = nodes
            .iter()
            .map(|n| {
                (
                    n.op.as_str(),
                    n.inputs.iter().map(String::as_str).collect(),
                    n.outputs[0].as_str(),
                )
            })
            .collect();
        assert_eq!(
            ops,
            vec![
                ("Gather", vec!["w_q", "ids"], "emb/strata_q"),
                ("Gather", vec!["w_s", "ids"], "emb/strata_scale"),
                ("Cast", vec!["emb/strata_q"], "emb/strata_f"),
                ("Mul", vec!["emb/strata_f", "emb/strata_scale"], "emb"),
                ("Add", vec!["emb", "pos"], "sum"),
            ]
        );
        assert_eq!(nodes[2].ints.get("to"), Some(&(FLOAT as i64)));
        // Every other field is kept byte for byte.
        let before = model(&[10, 1], false);
        let keep = |m: &[u8]| -> Vec<Vec<u8>> {
            fields(m)
                .unwrap()
                .iter()
                .filter(|f| f.number != field::MODEL_GRAPH)
                .map(|f| f.raw.to_vec())
                .collect()
        };
        assert_eq!(keep(&before), keep(&out));
    }

    #[test]
    fn other_shapes_and_shared_tables_are_left_alone() {
        // A per-column scale cannot be gathered by row.
        assert!(
            gather_before_dequantize(&model(&[1, 4], false))
                .unwrap()
                .is_none()
        );
        // The dequantized table is needed whole elsewhere.
        assert!(
            gather_before_dequantize(&model(&[10, 1], true))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn truncated_bytes_are_an_error_not_a_panic() {
        let m = model(&[10, 1], false);
        for cut in [1, 5, m.len() / 2, m.len() - 1] {
            assert!(gather_before_dequantize(&m[..cut]).is_err(), "cut at {cut}");
        }
    }
}
