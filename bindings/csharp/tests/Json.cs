using System;
using System.Collections.Generic;
using System.Globalization;
using System.Text;

namespace Iotconn.Tests
{
    /// <summary>A small JSON reader for hubsim's control API (Mono's base install has no JSON library):
    /// objects become Dictionary&lt;string, object&gt;, arrays List&lt;object&gt;, numbers double.</summary>
    internal sealed class Json
    {
        private readonly string text;
        private int at;

        private Json(string text)
        {
            this.text = text;
        }

        public static object Parse(string text)
        {
            var reader = new Json(text);
            object value = reader.Value();
            reader.Space();
            if (reader.at != text.Length)
            {
                throw reader.Fail("trailing characters");
            }
            return value;
        }

        /// <summary>text as a JSON string literal.</summary>
        public static string Quote(string text)
        {
            var result = new StringBuilder("\"");
            foreach (char c in text)
            {
                if (c == '"' || c == '\\')
                {
                    result.Append('\\').Append(c);
                }
                else if (c < ' ')
                {
                    result.Append("\\u").Append(((int)c).ToString("x4"));
                }
                else
                {
                    result.Append(c);
                }
            }
            return result.Append('"').ToString();
        }

        /// <summary>An object of string members, in the order given.</summary>
        public static string Object(IEnumerable<KeyValuePair<string, string>> members)
        {
            var parts = new List<string>();
            foreach (var member in members)
            {
                parts.Add(Quote(member.Key) + ":" + Quote(member.Value));
            }
            return "{" + string.Join(",", parts.ToArray()) + "}";
        }

        private object Value()
        {
            Space();
            if (at >= text.Length)
            {
                throw Fail("unexpected end");
            }
            char c = text[at];
            if (c == '{')
            {
                at++;
                var obj = new Dictionary<string, object>();
                if (Peek('}'))
                {
                    return obj;
                }
                do
                {
                    Space();
                    string key = String();
                    Expect(':');
                    obj[key] = Value();
                } while (Peek(','));
                Expect('}');
                return obj;
            }
            if (c == '[')
            {
                at++;
                var list = new List<object>();
                if (Peek(']'))
                {
                    return list;
                }
                do
                {
                    list.Add(Value());
                } while (Peek(','));
                Expect(']');
                return list;
            }
            if (c == '"')
            {
                return String();
            }
            foreach (var literal in new[] { "true", "false", "null" })
            {
                if (string.CompareOrdinal(text, at, literal, 0, literal.Length) == 0)
                {
                    at += literal.Length;
                    return literal == "null" ? null : (object)(literal == "true");
                }
            }
            int start = at;
            while (at < text.Length && "+-.eE0123456789".IndexOf(text[at]) >= 0)
            {
                at++;
            }
            if (start == at)
            {
                throw Fail("unexpected character");
            }
            return double.Parse(text.Substring(start, at - start), CultureInfo.InvariantCulture);
        }

        private string String()
        {
            Expect('"');
            var result = new StringBuilder();
            while (at < text.Length && text[at] != '"')
            {
                char c = text[at++];
                if (c != '\\')
                {
                    result.Append(c);
                    continue;
                }
                if (at >= text.Length)
                {
                    break;
                }
                char escape = text[at++];
                switch (escape)
                {
                    case 'n': result.Append('\n'); break;
                    case 't': result.Append('\t'); break;
                    case 'r': result.Append('\r'); break;
                    case 'b': result.Append('\b'); break;
                    case 'f': result.Append('\f'); break;
                    case 'u':
                        result.Append((char)int.Parse(text.Substring(at, 4), NumberStyles.HexNumber));
                        at += 4;
                        break;
                    default: result.Append(escape); break;
                }
            }
            Expect('"');
            return result.ToString();
        }

        private void Space()
        {
            while (at < text.Length && char.IsWhiteSpace(text[at]))
            {
                at++;
            }
        }

        private bool Peek(char c)
        {
            Space();
            if (at < text.Length && text[at] == c)
            {
                at++;
                return true;
            }
            return false;
        }

        private void Expect(char c)
        {
            if (!Peek(c))
            {
                throw Fail("expected '" + c + "'");
            }
        }

        private Exception Fail(string why)
        {
            return new FormatException("JSON: " + why + " at offset " + at);
        }
    }
}
