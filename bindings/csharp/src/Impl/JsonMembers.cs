using System.Collections.Generic;
using System.Text;

namespace Iotconn
{
    /// <summary>The top-level members of a JSON object as name -> raw JSON text of the value: just enough to split
    /// a twin into its sections and read "$version" without a JSON library. Input that is not a JSON object gives
    /// what could be read before it stopped making sense (the library hands over only valid JSON).</summary>
    internal static class JsonMembers
    {
        internal static Dictionary<string, string> Parse(string json)
        {
            var members = new Dictionary<string, string>();
            int i = SkipSpace(json, 0);
            if (i >= json.Length || json[i] != '{')
            {
                return members;
            }
            i++;
            while (true)
            {
                i = SkipSpace(json, i);
                if (i >= json.Length || json[i] != '"')
                {
                    return members;
                }
                int nameEnd = SkipString(json, i);
                string name = Unquote(json.Substring(i + 1, nameEnd - i - 2));
                i = SkipSpace(json, nameEnd);
                if (i >= json.Length || json[i] != ':')
                {
                    return members;
                }
                int start = SkipSpace(json, i + 1);
                int end = SkipValue(json, start);
                members[name] = json.Substring(start, end - start).TrimEnd();
                i = SkipSpace(json, end);
                if (i >= json.Length || json[i] != ',')
                {
                    return members;
                }
                i++;
            }
        }

        /// <summary>The string member name of members (from Parse), unquoted; null when absent or not a
        /// string.</summary>
        internal static string StringMember(Dictionary<string, string> members, string name)
        {
            string raw;
            return members.TryGetValue(name, out raw) && raw.Length >= 2 && raw[0] == '"'
                ? Unquote(raw.Substring(1, raw.Length - 2)) : null;
        }

        private static int SkipSpace(string json, int i)
        {
            while (i < json.Length && char.IsWhiteSpace(json[i]))
            {
                i++;
            }
            return i;
        }

        // From an opening quote to just past the closing one.
        private static int SkipString(string json, int i)
        {
            for (i++; i < json.Length; i++)
            {
                if (json[i] == '\\')
                {
                    i++;
                }
                else if (json[i] == '"')
                {
                    return i + 1;
                }
            }
            return json.Length;
        }

        // Past one value: strings whole, objects and arrays to their matching bracket, scalars to the next
        // delimiter of the enclosing object.
        private static int SkipValue(string json, int i)
        {
            int depth = 0;
            while (i < json.Length)
            {
                char c = json[i];
                if (c == '"')
                {
                    i = SkipString(json, i);
                    if (depth == 0)
                    {
                        return i;
                    }
                    continue;
                }
                if (c == '{' || c == '[')
                {
                    depth++;
                }
                else if (c == '}' || c == ']')
                {
                    if (depth == 0)
                    {
                        return i;
                    }
                    if (--depth == 0)
                    {
                        return i + 1;
                    }
                }
                else if (c == ',' && depth == 0)
                {
                    return i;
                }
                i++;
            }
            return i;
        }

        // Member names are plain in twins ("desired", "$version"); escapes other than \uXXXX map to their letter.
        private static string Unquote(string text)
        {
            if (text.IndexOf('\\') < 0)
            {
                return text;
            }
            var sb = new StringBuilder();
            for (int i = 0; i < text.Length; i++)
            {
                if (text[i] != '\\' || i + 1 >= text.Length)
                {
                    sb.Append(text[i]);
                    continue;
                }
                char e = text[++i];
                if (e == 'u' && i + 4 < text.Length)
                {
                    sb.Append((char)System.Convert.ToInt32(text.Substring(i + 1, 4), 16));
                    i += 4;
                }
                else
                {
                    sb.Append(e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e == 'b' ? '\b'
                        : e == 'f' ? '\f' : e);
                }
            }
            return sb.ToString();
        }
    }
}
