//! CEL parser: tokens to [`Expr`], by recursive descent over CEL's precedence levels
//! (`?:`, `||`, `&&`, relations and `in`, `+`, unary `!`/`-`, member access and calls).
//!
//! Calls are resolved here, not at evaluation: macros (`has`, `all`, `exists`, `exists_one`)
//! become their own nodes, functions become a [`Function`] checked for arity, `matches`
//! patterns are compiled once, and every identifier must be `self` or a macro variable.

use regex::Regex;

use super::lex::{Token, tokenize};
use super::{BinaryOp, Const, Expr, Function, Quantifier};

/// Deepest nesting accepted; the CRD rules stay far below it.
const MAX_DEPTH: usize = 64;

/// Parses `source` into a checked expression.
pub(super) fn parse(source: &str) -> Result<Expr, String> {
    let tokens = tokenize(source)?;
    let mut parser = Parser { tokens, pos: 0, depth: 0, scope: vec!["self".to_owned()] };
    let expr = parser.expr()?;
    match parser.peek() {
        Token::End => Ok(expr),
        other => Err(parser.error(&format!("unexpected {other:?} after the expression"))),
    }
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    pos: usize,
    depth: usize,
    /// Identifiers in scope: `self`, then the variables of enclosing macros.
    scope: Vec<String>,
}

impl Parser {
    fn peek(&self) -> &Token {
        self.tokens.get(self.pos).map_or(&Token::End, |(t, _)| t)
    }

    fn next(&mut self) -> Token {
        let token = self.peek().clone();
        self.pos += 1;
        token
    }

    fn error(&self, message: &str) -> String {
        let offset = self.tokens.get(self.pos).map_or(0, |(_, o)| *o);
        format!("{message} at offset {offset}")
    }

    fn eat(&mut self, punct: &str) -> bool {
        if matches!(self.peek(), Token::Punct(p) if *p == punct) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, punct: &str) -> Result<(), String> {
        if self.eat(punct) { Ok(()) } else { Err(self.error(&format!("expected {punct:?}"))) }
    }

    fn expr(&mut self) -> Result<Expr, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("expression nested too deeply"));
        }
        let condition = self.or()?;
        let result = if self.eat("?") {
            let then = self.or()?;
            self.expect(":")?;
            let otherwise = self.expr()?;
            Ok(Expr::Cond(Box::new(condition), Box::new(then), Box::new(otherwise)))
        } else {
            Ok(condition)
        };
        self.depth -= 1;
        result
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.eat("||") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.relation()?;
        while self.eat("&&") {
            left = Expr::And(Box::new(left), Box::new(self.relation()?));
        }
        Ok(left)
    }

    fn relation(&mut self) -> Result<Expr, String> {
        let mut left = self.addition()?;
        loop {
            let op = match self.peek() {
                Token::Punct("==") => BinaryOp::Eq,
                Token::Punct("!=") => BinaryOp::Ne,
                Token::Punct("<") => BinaryOp::Lt,
                Token::Punct("<=") => BinaryOp::Le,
                Token::Punct(">") => BinaryOp::Gt,
                Token::Punct(">=") => BinaryOp::Ge,
                Token::Ident(word) if word == "in" => BinaryOp::In,
                _ => return Ok(left),
            };
            self.pos += 1;
            left = Expr::Binary(op, Box::new(left), Box::new(self.addition()?));
        }
    }

    fn addition(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        while self.eat("+") {
            left = Expr::Binary(BinaryOp::Add, Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat("-") {
            return match self.next() {
                Token::Int(i) => Ok(Expr::Const(Const::Int(-i))),
                Token::Double(d) => Ok(Expr::Const(Const::Double(-d))),
                _ => Err(self.error("unary minus applies only to number literals here")),
            };
        }
        self.member()
    }

    fn member(&mut self) -> Result<Expr, String> {
        let mut operand = self.primary()?;
        while self.eat(".") {
            let Token::Ident(name) = self.next() else {
                return Err(self.error("expected a field or method name after '.'"));
            };
            operand = if self.eat("(") {
                self.method(operand, &name)?
            } else {
                Expr::Select { operand: Box::new(operand), field: name, test_only: false }
            };
        }
        Ok(operand)
    }

    fn primary(&mut self) -> Result<Expr, String> {
        match self.next() {
            Token::Int(i) => Ok(Expr::Const(Const::Int(i))),
            Token::Uint(u) => Ok(Expr::Const(Const::Uint(u))),
            Token::Double(d) => Ok(Expr::Const(Const::Double(d))),
            Token::Str(s) => Ok(Expr::Const(Const::Str(s))),
            Token::Punct("(") => {
                let inner = self.expr()?;
                self.expect(")")?;
                Ok(inner)
            }
            Token::Punct("[") => Ok(Expr::List(self.arguments("]")?)),
            Token::Punct("{") => self.map_literal(),
            Token::Ident(name) => match name.as_str() {
                "true" => Ok(Expr::Const(Const::Bool(true))),
                "false" => Ok(Expr::Const(Const::Bool(false))),
                "null" => Ok(Expr::Const(Const::Null)),
                _ if self.eat("(") => self.global(&name),
                _ if self.scope.contains(&name) => Ok(Expr::Ident(name)),
                _ => Err(self.error(&format!("undeclared reference to '{name}'"))),
            },
            other => Err(self.error(&format!("unexpected {other:?}"))),
        }
    }

    /// Comma-separated expressions up to `close` (the opening token already consumed).
    fn arguments(&mut self, close: &str) -> Result<Vec<Expr>, String> {
        let mut items = Vec::new();
        if self.eat(close) {
            return Ok(items);
        }
        loop {
            items.push(self.expr()?);
            if self.eat(close) {
                return Ok(items);
            }
            self.expect(",")?;
        }
    }

    fn map_literal(&mut self) -> Result<Expr, String> {
        let mut entries = Vec::new();
        if self.eat("}") {
            return Ok(Expr::Map(entries));
        }
        loop {
            let key = self.expr()?;
            self.expect(":")?;
            entries.push((key, self.expr()?));
            if self.eat("}") {
                return Ok(Expr::Map(entries));
            }
            self.expect(",")?;
        }
    }

    /// A global call `name(...)`, after its `(`.
    fn global(&mut self, name: &str) -> Result<Expr, String> {
        if name == "has" {
            let mut args = self.arguments(")")?;
            return match (args.pop(), args.is_empty()) {
                (Some(Expr::Select { operand, field, .. }), true) => {
                    Ok(Expr::Select { operand, field, test_only: true })
                }
                _ => Err(self.error("has() takes one field selection, like has(self.field)")),
            };
        }
        let function = match name {
            "size" => Function::Size,
            "int" => Function::Int,
            "duration" => Function::Duration,
            "url" => Function::Url,
            "isURL" => Function::IsUrl,
            _ => return Err(self.error(&format!("undeclared reference to '{name}'"))),
        };
        let args = self.arguments(")")?;
        self.call(function, args, 1)
    }

    /// A method call `operand.name(...)`, after its `(`.
    fn method(&mut self, operand: Expr, name: &str) -> Result<Expr, String> {
        let quantifier = match name {
            "all" => Some(Quantifier::All),
            "exists" => Some(Quantifier::Exists),
            "exists_one" => Some(Quantifier::ExistsOne),
            _ => None,
        };
        if let Some(kind) = quantifier {
            let Token::Ident(var) = self.next() else {
                return Err(self.error(&format!("{name}() needs a variable name first")));
            };
            self.expect(",")?;
            self.scope.push(var.clone());
            let body = self.expr();
            self.scope.pop();
            self.expect(")")?;
            return Ok(Expr::Comprehension { kind, range: Box::new(operand), var, body: Box::new(body?) });
        }
        let mut args = vec![operand];
        let (function, arity) = match name {
            "size" => (Function::Size, 1),
            "contains" => (Function::Contains, 2),
            "startsWith" => (Function::StartsWith, 2),
            "endsWith" => (Function::EndsWith, 2),
            "getScheme" => (Function::GetScheme, 1),
            "substring" => (Function::Substring, 3),
            "matches" => {
                let mut pattern = self.arguments(")")?;
                return match (pattern.pop(), pattern.is_empty()) {
                    (Some(Expr::Const(Const::Str(re))), true) => {
                        let regex = Regex::new(&re).map_err(|e| self.error(&format!("bad pattern: {e}")))?;
                        Ok(Expr::Call(Function::Matches(Box::new(regex)), args))
                    }
                    _ => Err(self.error("matches() takes one string literal pattern")),
                };
            }
            _ => return Err(self.error(&format!("undeclared reference to '{name}'"))),
        };
        args.extend(self.arguments(")")?);
        self.call(function, args, arity)
    }

    fn call(&self, function: Function, args: Vec<Expr>, arity: usize) -> Result<Expr, String> {
        if args.len() == arity {
            Ok(Expr::Call(function, args))
        } else {
            Err(self
                .error(&format!("found no matching overload for {function:?} with {} arguments", args.len())))
        }
    }
}
